"""Official generator checkpoints (drx-code/EquivariantModeling) -> EquivariantGenerator.

The official checkpoint is a `torch.save` dict with `model` and `model_ema` (evaluation uses `model_ema`) and
`args`, the training script's argparse.Namespace. eqgen keeps the official names inside the blocks and the
flow head, so the weights map by renaming four prefixes and two misleading names (`NAMES`). The sizes are
read off the tensor shapes; what the shapes cannot tell (heads, window, position shift, noise draws,
dropouts) comes from `args` when present, else from explicit arguments, else from the official recipe
(GeneratorConfig's defaults).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..configs import from_dict
from ..errors import EqgenError
from ..generator import EquivariantGenerator, GeneratorConfig, check_config, rename_parts
from ..checkpoint import check_fits
from .common import read_checkpoint, state_dict_in

NAMES = {  # official -> eqgen, whole dotted parts of the keys
    "encoder_blocks": "blocks",
    "encoder_norm": "norm",
    "encoder_pos_embed_learned": "class_pos",
    "diffloss.net": "head",
    "fake_latent": "null_class",        # the learned null class
    "attn2.qkv": "attn2.q",             # the cross-attention's query projection (keys and values are attn2.k, .v)
}
HEADS = {"tiny_model": 4, "small_model": 8, "base_model": 12, "large_model": 16, "huge_model": 16}


def config_from_args(args: dict[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    """GeneratorConfig fields from the official training arguments (or constructor keywords)."""
    def number(name: str, kind: type) -> int | float | None:
        try:
            return None if args[name] is None else kind(args[name])
        except (TypeError, ValueError):
            raise EqgenError(f"{source}: args.{name} must be {'an integer' if kind is int else 'a number'}, "
                             f"got {args[name]!r:.40}") from None

    fields = {}
    if args.get("encoder_num_heads"):
        fields["heads"] = number("encoder_num_heads", int)
    elif isinstance(args.get("model"), str) and args["model"] in HEADS:
        fields["heads"] = HEADS[args["model"]]
    if "cond_length" in args:
        fields["window"] = number("cond_length", int) or None  # the official 0 means full causal attention
    if "token_num" in args:
        fields["train_tokens"] = number("token_num", int)
    if "shift_num" in args:  # None: the official code then shifts by up to the training length
        fields["rope_shift"] = number("shift_num", int) or fields.get("train_tokens") or 16
    for official, ours, kind in (("diffusion_batch_mul", "noise_draws", int),
                                 ("label_drop_prob", "label_dropout", float), ("attn_dropout", "attn_dropout", float),
                                 ("proj_dropout", "proj_dropout", float), ("mlp_ratio", "mlp_ratio", float)):
        if official in args:
            fields[ours] = number(official, kind)
    return fields


def config_from_shapes(state: dict[str, torch.Tensor], source: str = "the state dict") -> dict[str, Any]:
    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

    try:
        width, token_dim = state["z_proj.weight"].shape
        return dict(token_dim=token_dim, width=width, depth=count("blocks."),
                    mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / width,
                    num_classes=state["class_emb.weight"].shape[0], num_class_tokens=state["class_pos"].shape[1],
                    head_width=state["head.input_proj.weight"].shape[0], head_depth=count("head.res_blocks."))
    except KeyError as err:
        raise EqgenError(f"{source} is not an official generator state dict: no {err.args[0]}") from None
    except (ValueError, IndexError, ZeroDivisionError):  # a tensor of another rank, or empty
        raise EqgenError(f"{source} is not an official generator state dict: z_proj.weight, class_pos or "
                         f"blocks.0.mlp.fc1.weight has an unexpected shape") from None


def convert_generator_state_dict(state: dict[str, torch.Tensor], args: dict[str, Any] | None = None,
                                 source: str = "the state dict", **overrides: Any
                                 ) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    """An official `state_dict` -> (GeneratorConfig, eqgen state dict), checked key by key and shape by shape.

    `args`: the official arguments (a checkpoint's `args`, or the constructor keywords); `overrides`:
    GeneratorConfig fields, which win over both."""
    state = rename_parts(state, NAMES)
    fields = {**config_from_shapes(state, source), **config_from_args(args or {}, source), **overrides}
    if "heads" not in fields:
        raise EqgenError(f"{source} does not say how many attention heads it has: pass heads=N")
    config = from_dict(GeneratorConfig, fields, source)
    try:
        check_config(config)
    except EqgenError as err:
        raise EqgenError(f"{source}: {err}") from None
    with torch.device("meta"):  # the expected keys and shapes, without allocating the weights
        expected = EquivariantGenerator(config)
    check_fits(expected, state, source)
    return config, state


def load_official_generator(path: str | Path, **overrides: Any) -> EquivariantGenerator:
    """An official checkpoint (its EMA weights), or a safetensors file of an official state dict, as an
    EquivariantGenerator in eval mode. `overrides`: GeneratorConfig fields (e.g. heads=16, window=3)."""
    ckpt = read_checkpoint(path)
    state, args = ckpt, None
    if isinstance(ckpt, dict) and ("model_ema" in ckpt or "model" in ckpt):
        state = ckpt.get("model_ema", ckpt.get("model"))
        args = ckpt.get("args")
        args = vars(args) if isinstance(args, argparse.Namespace) else args
        if args is not None and not isinstance(args, dict):
            raise EqgenError(f"{path}: args must be the training arguments (a Namespace or a dict), "
                             f"got {type(args).__name__}")
    state = state_dict_in(state, path, "generator", "model_ema, model or a plain state dict")
    config, state = convert_generator_state_dict(state, args, source=str(path), **overrides)
    model = EquivariantGenerator(config)
    model.load_state_dict(state)
    return model.eval()

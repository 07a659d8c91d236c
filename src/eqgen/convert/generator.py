"""Official generator checkpoints (drx-code/EquivariantModeling) -> EquivariantGenerator.

The official checkpoint is a `torch.save` dict with `model` and `model_ema` (evaluation uses `model_ema`)
and `args`. eqgen keeps the official module names inside the blocks and the flow head, so the mapping is a
handful of prefix renames.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import EqgenError
from ..generator import EquivariantGenerator, GeneratorConfig
from .common import check_fits, read_checkpoint

RENAMES = (  # official prefix -> eqgen prefix
    ("encoder_blocks.", "blocks."),
    ("encoder_norm.", "norm."),
    ("encoder_pos_embed_learned", "class_pos"),
    ("diffloss.net.", "head."),
)
HEADS = {"tiny_model": 4, "small_model": 8, "base_model": 12, "large_model": 16, "huge_model": 16}


def rename_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def config_from_official(kwargs: dict[str, Any]) -> GeneratorConfig:
    """The official constructor / training arguments -> GeneratorConfig."""
    heads = kwargs.get("encoder_num_heads") or HEADS.get(kwargs.get("model", ""))
    width = kwargs.get("encoder_embed_dim")
    if heads is None or width is None:
        raise EqgenError("the official arguments name neither the head count nor a known model size")
    cond_length = int(kwargs.get("cond_length", 0))
    return GeneratorConfig(
        token_dim=int(kwargs["vae_embed_dim"]), width=int(width),
        depth=int(kwargs["encoder_depth"]) + int(kwargs["decoder_depth"]), heads=int(heads),
        mlp_ratio=float(kwargs.get("mlp_ratio", 4.0)), num_classes=int(kwargs["class_num"]),
        class_tokens=int(kwargs["buffer_size"]), window=cond_length or None,
        rope_shift=int(kwargs.get("shift_num") or kwargs.get("token_num", 16)),
        head_width=int(kwargs["diffloss_w"]), head_depth=int(kwargs["diffloss_d"]),
        noise_draws=int(kwargs.get("diffusion_batch_mul", 4)), label_dropout=float(kwargs.get("label_drop_prob", 0.1)),
        attn_dropout=float(kwargs.get("attn_dropout", 0.1)), proj_dropout=float(kwargs.get("proj_dropout", 0.1)),
        train_tokens=int(kwargs.get("token_num", 16)))


def _args_from_state(state: dict[str, torch.Tensor], ckpt: dict[str, Any]) -> dict[str, Any]:
    """The official arguments: from the checkpoint's `args`, else read off the tensor shapes."""
    args = dict(vars(ckpt["args"])) if "args" in ckpt and hasattr(ckpt["args"], "__dict__") else {}
    depth = len({k.split(".")[1] for k in state if k.startswith("encoder_blocks.")})
    shapes = {
        "encoder_embed_dim": state["class_emb.weight"].shape[1], "class_num": state["class_emb.weight"].shape[0],
        "vae_embed_dim": state["z_proj.weight"].shape[1], "buffer_size": state["encoder_pos_embed_learned"].shape[1],
        "diffloss_w": state["diffloss.net.input_proj.weight"].shape[0],
        "diffloss_d": len({k.split(".")[3] for k in state if k.startswith("diffloss.net.res_blocks.")}),
        "encoder_depth": depth, "decoder_depth": 0,
    }
    return {**args, **shapes}


def convert_generator(path: str | Path, **overrides: Any) -> EquivariantGenerator:
    """Load an official checkpoint (its EMA weights) or an official-layout state dict into eqgen.

    `overrides` give official arguments the file lacks (e.g. `encoder_num_heads=4`, `cond_length=3`)."""
    ckpt = read_checkpoint(path)
    state = ckpt.get("model_ema", ckpt.get("model", ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "class_emb.weight" not in state:
        raise EqgenError(f"{path} holds no official generator weights (no model_ema/model with class_emb.weight)")
    args = {**_args_from_state(state, ckpt), **overrides}
    args.setdefault("cond_length", 3)
    model = EquivariantGenerator(config_from_official(args))
    renamed = rename_official(state)
    check_fits(model, renamed, str(path))
    model.load_state_dict(renamed)
    return model.eval()

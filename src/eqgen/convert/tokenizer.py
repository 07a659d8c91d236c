"""Official tokenizer checkpoints (drx-code/EquivariantModeling) -> ColumnTokenizer.

The official tokenizer is a Lightning module whose inference weights are its EMA copies: the state dict holds
`ema_<module>.<parameter name without dots>` (e.g. `ema_decoder.up3block0conv1weight`) beside the raw
weights. eqgen reads the EMA entries, ignores the rest (raw copies, EMA counters, `loss.*`), and builds the
architecture from the official YAML config (`model.params`: ddconfig, sematicconfig, embed_dim, std).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..configs import load_json
from ..errors import EqgenError
from ..tokenizer import ColumnTokenizer, TokenizerConfig
from .common import check_fits, read_checkpoint

EMA_MODULES = ("encoder", "decoder", "semantic_decoder", "quant_layer", "post_quant_layer")


def read_official_config(path: str | Path) -> dict[str, Any]:
    """The constructor arguments from an official YAML config (or a JSON file holding them)."""
    path = Path(path)
    if not path.is_file():
        raise EqgenError(f"config {path} not found")
    if path.suffix == ".json":
        data = load_json(path)
        return data.get("constructor_kwargs", data)
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise EqgenError(f"{path} is not valid YAML ({str(err).splitlines()[0]})") from None
    try:
        return data["model"]["params"]
    except (KeyError, TypeError):
        raise EqgenError(f"{path} has no model.params section (is it an official tokenizer config?)") from None


def config_from_official(params: dict[str, Any]) -> TokenizerConfig:
    dd, sem = params["ddconfig"], params["sematicconfig"]
    levels = len(dd["ch_mult"])
    unsupported = []
    if dd.get("double_enc"):
        unsupported.append("double_enc")
    if dd.get("len_down_scale", levels) < levels - 1:
        unsupported.append("height-only downsampling (len_down_scale < levels − 1)")
    if dd.get("semantic_map", "res") != "res":
        unsupported.append(f"semantic_map={dd['semantic_map']}")
    if sem.get("downsample_scale", 0) or sem["num_res_blocks"] != dd["num_res_blocks"]:
        unsupported.append("this semantic decoder layout")
    if unsupported:
        raise EqgenError(f"official tokenizer with {', '.join(unsupported)} is not supported")
    config = TokenizerConfig(
        height=dd["resolution"], in_channels=dd["in_channels"], ch=dd["ch"], ch_mult=tuple(dd["ch_mult"]),
        num_res_blocks=dd["num_res_blocks"], attn_resolutions=tuple(dd["attn_resolutions"]),
        z_channels=dd["z_channels"], embed_dim=params["embed_dim"], dropout=dd.get("dropout", 0.0),
        noise_std=params.get("std", 2.5), semantic_ch=sem["ch"], semantic_ch_mult=tuple(sem["ch_mult"]),
        semantic_out=sem["out_ch"], latent_scale=0.05493)
    if params.get("post_channels", config.column_channels) != config.column_channels:
        raise EqgenError(f"post_channels {params['post_channels']} != z_channels × latent height "
                         f"({config.column_channels})")
    return config


def ema_name(key: str) -> str:
    """eqgen key -> official EMA buffer: `decoder.up.3.block.0.conv1.weight` -> `ema_decoder.up3block0conv1weight`."""
    module, _, rest = key.partition(".")
    return f"ema_{module}.{rest.replace('.', '')}"


def convert_tokenizer(checkpoint: str | Path, config: str | Path) -> ColumnTokenizer:
    ckpt = read_checkpoint(checkpoint)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(k.startswith("ema_encoder.") for k in state):
        raise EqgenError(f"{checkpoint} holds no official tokenizer EMA weights (no ema_encoder.* entries)")
    model = ColumnTokenizer(config_from_official(read_official_config(config)))
    mapped = {key: state[ema_name(key)] for key in model.state_dict() if ema_name(key) in state}
    check_fits(model, mapped, str(checkpoint))
    model.load_state_dict(mapped)
    return model.eval()

"""Official tokenizer checkpoints (drx-code/EquivariantModeling) -> ColumnTokenizer.

The official tokenizer is a Lightning module. Its state dict holds the raw weights (`decoder.up.3.block.0.
conv1.weight`) and, for inference, their EMA copies under `ema_<module>.<parameter name without dots>`
(`ema_decoder.up3block0conv1weight`): the official scripts decode inside `ema_scope()`. eqgen reads the EMA
copies when the file has them (else the raw weights) and ignores the rest: the other copy, the EMA counters
(`decay`, `num_updates`), `loss.*` (LPIPS and discriminator), and the semantic decoder's extra residual block
per level, which the official code builds but never runs. The architecture comes from the official config
arguments (`ddconfig`, `sematicconfig`, `embed_dim`, `post_channels`, `std`), read from the official YAML file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..configs import from_dict, from_preset
from ..checkpoint import check_fits
from ..errors import EqgenError
from ..files import load_json, located
from ..tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig
from .common import read_checkpoint, state_dict_in

MODULES = ("encoder", "decoder", "semantic_decoder", "quant_layer", "post_quant_layer")
OFFICIAL_LATENT_SCALE = 0.05493   # the official generator's --vae_norm for this tokenizer
RESAMPLERS = {"encoder": "downsample.conv.conv.", "decoder": "upsample.conv.conv."}   # official names of `resample.conv.`


# ---------------------------------------------------------------------------------------------------------
# Config


@dataclass
class OfficialEncoderConfig:
    """What eqgen reads of the official `model.params.ddconfig` (the encoder and pixel decoder)."""

    resolution: int
    in_channels: int
    out_ch: int
    ch: int
    ch_mult: list[int]
    num_res_blocks: int
    attn_resolutions: list[int]
    z_channels: int
    dropout: float = 0.0
    len_down_scale: int = 1
    double_enc: bool = False
    semantic_map: str = "res"


@dataclass
class OfficialSemanticConfig:
    """What eqgen reads of the official `model.params.sematicconfig` (the semantic decoder; sic)."""

    out_ch: int
    ch: int
    ch_mult: list[int]
    num_res_blocks: int
    downsample_scale: int = 0
    attn_resolutions: list[int] = field(default_factory=list)


@dataclass
class OfficialTokenizerParams:
    """What eqgen reads of the official tokenizer's constructor arguments (`model.params`)."""

    ddconfig: OfficialEncoderConfig
    sematicconfig: OfficialSemanticConfig
    embed_dim: int
    post_channels: int | None = None
    std: float = 2.5


def read_official_config(path: str | Path) -> dict[str, Any]:
    """The constructor arguments from an official YAML config (`model.params`), or from a JSON file holding
    them (at the top level or under `constructor_kwargs`, as the test fixtures do)."""
    path = Path(path)
    if not path.is_file():
        raise EqgenError(f"config {path} not found")
    if path.suffix == ".json":
        data = load_json(path)
        params = data.get("constructor_kwargs", data)
        if not isinstance(params, dict):
            raise EqgenError(f"{path}: constructor_kwargs must be an object")
        return params
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise EqgenError(f"{path} is not valid YAML ({str(err).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EqgenError(f"cannot read {path} ({err})") from None
    model = data.get("model") if isinstance(data, dict) else None
    params = model.get("params") if isinstance(model, dict) else None
    if not isinstance(params, dict):
        raise EqgenError(f"{path} has no model.params mapping (is it an official tokenizer config?)")
    return located(params, path, "model.params")


def config_from_official(params: dict[str, Any], latent_scale: float = OFFICIAL_LATENT_SCALE) -> TokenizerConfig:
    """The official constructor arguments -> TokenizerConfig (one clear error for what eqgen does not build).
    Values read from a file (`read_official_config`) are checked with the file and key path in the errors."""
    official = from_dict(OfficialTokenizerParams, params, ignore_unknown=True)
    dd, sem = official.ddconfig, official.sematicconfig
    file = getattr(params, "file", None)
    where = f"{file}: " if file else ""
    if not dd.ch_mult or not sem.ch_mult or dd.ch < 1 or sem.ch < 1:
        raise EqgenError(f"{where}ddconfig and sematicconfig need ch ≥ 1 and at least one ch_mult entry")
    unsupported = [name for name, bad in (
        ("double_enc", dd.double_enc),
        (f"semantic_map={dd.semantic_map!r}", dd.semantic_map != "res"),
        ("semantic decoder downsampling", sem.downsample_scale),
        ("semantic decoder attention", sem.attn_resolutions),
        ("semantic decoder input width != decoder width", sem.ch * sem.ch_mult[0] != dd.ch * dd.ch_mult[-1]),
    ) if bad]
    if unsupported:
        raise EqgenError(f"{where}official tokenizer with {', '.join(unsupported)} is not supported")
    levels = len(dd.ch_mult)
    config = from_dict(TokenizerConfig, dict(
        height=dd.resolution, in_channels=dd.in_channels, out_channels=dd.out_ch, ch=dd.ch,
        ch_mult=dd.ch_mult, num_res_blocks=dd.num_res_blocks, attn_resolutions=dd.attn_resolutions,
        z_channels=dd.z_channels, embed_dim=official.embed_dim, dropout=dd.dropout,
        # the official code treats any len_down_scale ≥ levels − 1 as "every downsample halves the width"
        len_down_scale=min(dd.len_down_scale, levels - 1), noise_std=official.std,
        semantic_widths=[sem.ch * m for m in sem.ch_mult[1:]] + [sem.ch * (sem.out_ch // sem.ch)],
        semantic_res_blocks=sem.num_res_blocks, semantic_dim=sem.out_ch, latent_scale=latent_scale),
        source=file)
    if official.post_channels not in (None, config.column_channels):
        raise EqgenError(f"{where}post_channels {official.post_channels} != z_channels × latent rows "
                         f"({config.column_channels})")
    return config


# ---------------------------------------------------------------------------------------------------------
# Weights


def official_name(key: str, ema: bool) -> str:
    """eqgen key -> official key: `decoder.up.3.resample.conv.weight` -> `decoder.up.3.upsample.conv.conv.weight`,
    or with `ema` -> `ema_decoder.up3upsampleconvconvweight`."""
    module, _, rest = key.partition(".")
    if module in RESAMPLERS:
        rest = rest.replace("resample.conv.", RESAMPLERS[module])
    return f"ema_{module}.{rest.replace('.', '')}" if ema else f"{module}.{rest}"


def _unused_semantic_blocks(config: TokenizerConfig, ema: bool) -> re.Pattern:
    """The official semantic decoder builds one residual block per level more than it runs."""
    r = config.semantic_res_blocks
    return re.compile(rf"^ema_semantic_decoder\.down\d+block{r}(?=[a-z])" if ema
                      else rf"^semantic_decoder\.down\.\d+\.block\.{r}\.")


def _ignored(key: str, ema: bool) -> bool:
    """Entries of an official state dict that carry no inference weights (or the copy not used)."""
    if key.startswith("loss.") or key.endswith((".decay", ".num_updates")):
        return True
    module = key.partition(".")[0]
    return module in MODULES if ema else module.startswith("ema_")


def convert_tokenizer_state_dict(state: dict[str, torch.Tensor], config: TokenizerConfig,
                                 source: str = "the state dict") -> dict[str, torch.Tensor]:
    """An official tokenizer state dict -> eqgen's, checked key by key and shape by shape against `config`."""
    ema = any(k.startswith("ema_encoder.") for k in state)
    with torch.device("meta"):  # the expected keys and shapes, without allocating the weights
        expected = ColumnTokenizer(config)
    wanted = {official_name(key, ema): key for key in expected.state_dict()}
    unused = _unused_semantic_blocks(config, ema)
    mapped = {}
    for key, value in state.items():
        if key in wanted:
            mapped[wanted[key]] = value
        elif not (_ignored(key, ema) or unused.match(key)):
            mapped[key] = value   # check_fits names it as unexpected
    check_fits(expected, mapped, source)
    return mapped


def load_official_tokenizer(checkpoint: str | Path, config: str | Path | None = None, *,
                            latent_scale: float = OFFICIAL_LATENT_SCALE, trust_pickle: bool = False) -> ColumnTokenizer:
    """An official tokenizer — a Lightning `.ckpt` (weights under `state_dict`) or a safetensors file of its
    state dict — as a ColumnTokenizer in eval mode.

    `config` is the official YAML (or a JSON of its `model.params`); None means the released 256² tokenizer.
    Checkpoints are read with `torch.load(weights_only=True)`; `trust_pickle=True` unpickles a file that needs
    more — only for a file from a source you trust, since unpickling can run arbitrary code."""
    ckpt = _read(Path(checkpoint), trust_pickle)
    expected = "tensors named encoder.* or ema_encoder.*, under state_dict or at the top level"
    state = state_dict_in(ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None, checkpoint,
                          "official tokenizer", expected)
    if not any(k.startswith(("ema_encoder.", "encoder.")) for k in state):
        raise EqgenError(f"{checkpoint} holds no official tokenizer weights (expected {expected})")
    if config is None:
        cfg = from_preset(TokenizerConfig, TOKENIZER_PRESETS, "paper", latent_scale=latent_scale)
    else:
        cfg = config_from_official(read_official_config(config), latent_scale)
    model = ColumnTokenizer(cfg)
    model.load_state_dict(convert_tokenizer_state_dict(state, cfg, str(checkpoint)))
    return model.eval()


def _read(path: Path, trust_pickle: bool) -> Any:
    if not (trust_pickle and path.suffix != ".safetensors" and path.is_file()):
        try:
            return read_checkpoint(path)
        except EqgenError as err:
            if path.suffix == ".safetensors" or not path.is_file():
                raise
            raise EqgenError(f"{err}. If you trust its source, allow unpickling with trust_pickle=True") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: one line, not a traceback
        raise EqgenError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from None

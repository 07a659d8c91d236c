"""What a generator costs: parameters and FLOPs of the presets (paper Table 2), and the attention FLOPs that
windowed attention saves over full causal attention (paper Table 4).

FLOPs are counted by torch.utils.flop_counter on a model built on the meta device (no memory, no weights), one
multiply-add = 2 FLOPs. The attention FLOPs are counted from the attended (query, key) pairs: a dense kernel
with a mask computes the masked pairs too, a sliding-window kernel does not.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..configs import from_preset
from ..generator import GENERATOR_PRESETS, EquivariantGenerator, GeneratorConfig

# Paper Table 2 (GFLOPs per 256² image) and Table 7 (parameters as printed).
PAPER = {"S": (5.41, "151M"), "B": (9.78, "294M"), "L": (19.66, "644M"), "H": (34.91, "1.2B")}


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@torch.no_grad()
def generator_costs(config: GeneratorConfig, tokens: int | None = None) -> dict[str, float]:
    """Parameters, and GFLOPs per image of `tokens` tokens (default: the trained length): the transformer's
    forward over the whole sequence, and one flow-head evaluation of every token."""
    tokens = tokens or config.train_tokens
    with torch.device("meta"):
        model = EquivariantGenerator(config).eval()
        x = torch.zeros(1, tokens, config.token_dim)
        labels = torch.zeros(1, dtype=torch.long)
        z = torch.zeros(tokens, config.width)
        t = torch.zeros(tokens)
        transformer = _flops(lambda: model.condition(x, labels))
        head = _flops(lambda: model.head(x[0], t, z))
    return {"params": sum(p.numel() for p in model.parameters()), "transformer_gflops": transformer / 1e9,
            "head_gflops": head / 1e9}


def preset_costs(names=("S", "B", "L", "H")) -> list[dict]:
    """One row per paper preset (1,000 classes, 16 tokens of 256 channels), with the paper's numbers beside."""
    rows = []
    for name in names:
        costs = generator_costs(from_preset(GeneratorConfig, GENERATOR_PRESETS, name))
        rows.append({"preset": name, **costs, "paper_gflops": PAPER[name][0], "paper_params": PAPER[name][1]})
    return rows


def attended_pairs(length: int, window: int | None) -> int:
    """(query, key) pairs of causal self-attention over `length` tokens: each token sees itself and the
    previous `window` tokens (all previous ones when window is None)."""
    return sum(i + 1 if window is None else min(i + 1, window + 1) for i in range(length))


def attention_gflops(config: GeneratorConfig, length: int) -> float:
    """Self-attention score and value FLOPs per image (2·width per pair for q·k, 2·width for the weighted sum),
    over all layers."""
    return 4 * config.width * attended_pairs(length, config.window) * config.depth / 1e9

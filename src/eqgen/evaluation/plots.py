"""Plots of the analyses, as PNG files: per-position curves (`eqgen analyze positions`, the report) and the
long-image drift of the report's RoPE-shift experiment."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")   # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_positions(path: str | Path, curves: dict[str, tuple[list, list]], title: str, ylabel: str = "flow loss") -> None:
    """One curve per label: (value per token position, its standard error)."""
    fig, ax = _pyplot().subplots(figsize=(6.4, 3.6))
    for label, (mean, error) in curves.items():
        x = np.arange(len(mean))
        ax.errorbar(x, mean, yerr=error, marker="o", ms=3, capsize=2, label=label)
    ax.set(xlabel="token position", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_long(path: str | Path, runs: dict[str, list[dict]], tokens: int) -> None:
    """Colour distance and seam ratio per window of `tokens` tokens (rows of `drift_table`), one line per run;
    the dotted line marks the training width."""
    fig, axes = _pyplot().subplots(1, 2, figsize=(9, 3.4))
    for label, rows in runs.items():
        x = np.arange(len(rows)) * tokens
        axes[0].plot(x, [r["colour_z"] for r in rows], marker="o", ms=3, label=label)
        axes[1].plot(x, [r["seam_ratio"] for r in rows], marker="o", ms=3, label=label)
    axes[0].set(xlabel="first token of the window", ylabel="colour distance (z)", title="colour vs ground truth")
    axes[1].set(xlabel="first token of the window", ylabel="largest column jump / ground truth's", title="seams")
    for ax in axes:
        ax.axvline(tokens, color="grey", ls=":", lw=1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)

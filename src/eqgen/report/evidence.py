"""The rule every verdict and observation of the report follows, and the statistics it needs.

A difference is evidence when it exceeds its noise: Z standard errors for held-out losses and the statistics
derived from them, the real-vs-real FID (the noise floor) for landscape-FIDs. A claim of the paper is
**reproduced** when at least one of its measures tells and every measure that tells points the paper's way,
**not reproduced** when one that tells points the other way, and **inconclusive** when none tells. Sentences
are worded by the same comparisons (`Evidence.word`), so no text can say more than its numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z = 2.0            # standard errors an effect must exceed to count
BOOTSTRAP = 1000   # draws for the standard error of a spread over positions


@dataclass
class Evidence:
    """One measured difference, signed so that a positive effect is the paper's direction."""
    what: str
    effect: float
    threshold: float   # Z standard errors, or the FID floor

    @property
    def tells(self) -> bool:
        return abs(self.effect) > self.threshold

    def word(self, positive: str, negative: str, within: str) -> str:
        """How a sentence puts it: `positive` or `negative` when it tells, else `within`."""
        return within if not self.tells else positive if self.effect > 0 else negative

    def __str__(self) -> str:
        return f"{self.what} {self.effect:+.4g}, {self.word('beyond', 'beyond', 'within')} its noise threshold " \
               f"{self.threshold:.4g}"


def verdict(evidence: list[Evidence]) -> str:
    telling = [e for e in evidence if e.tells]
    if any(e.effect < 0 for e in telling):
        return "not reproduced"
    return "reproduced" if telling else "inconclusive"


def verdict_line(evidence: list[Evidence], claim: str) -> str:
    return f"Verdict: **{verdict(evidence)}** — {claim} Measured: " + "; ".join(map(str, evidence)) + "."


def listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def split_names(names: list[str], holds: list[bool], everything: str, nothing: str, preposition: str = "for") -> str:
    """'for S, not for B, L and H' — or `everything` / `nothing` when all / none hold."""
    yes, no = [n for n, h in zip(names, holds) if h], [n for n, h in zip(names, holds) if not h]
    if not no:
        return everything
    if not yes:
        return nothing
    return f"{preposition} {listing(yes)}, not {preposition} {listing(no)}"


def mean_se(values: np.ndarray, errors: np.ndarray) -> tuple[float, float]:
    """The mean of independent estimates and its standard error."""
    return float(values.mean()), float(np.sqrt((errors ** 2).sum()) / len(errors))


def ratio_se(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """a / b and its standard error (first-order), for independent (mean, standard error) pairs."""
    r = a[0] / b[0]
    return r, abs(r) * float(np.hypot(a[1] / a[0], b[1] / b[0]))


def spread_se(loss: np.ndarray, se: np.ndarray) -> tuple[float, float]:
    """std / mean of per-position losses and its standard error, by a parametric bootstrap (fixed seed) that
    redraws each position from its mean and standard error."""
    draws = loss + se * np.random.default_rng(0).standard_normal((BOOTSTRAP, len(loss)))
    return float(loss.std() / loss.mean()), float((draws.std(1) / draws.mean(1)).std())


def window_mean_se(rows: list[dict], key: str) -> tuple[float, float]:
    """The mean of a drift statistic over windows and its standard error from their scatter (infinite with
    one window: nothing can tell)."""
    x = np.array([row[key] for row in rows])
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("inf")

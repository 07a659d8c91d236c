"""`eqgen report`: the paper's equivariance analysis (DESIGN §4) reproduced at small scale, in one command.

experiments.py trains and measures every variant into OUT/results.json (a rerun continues where an
interrupted one stopped); writeup.py turns those results into the markdown report and its plots; evidence.py
is the rule by which every verdict and observation in it is computed.
"""
from ..evaluation.plots import plot_positions  # where `eqgen analyze positions` imports it from
from .experiments import EXPERIMENTS, TOKENS, ReportConfig, Results, early_steps, run_experiments
from .writeup import markdown, write_report

__all__ = ["EXPERIMENTS", "TOKENS", "ReportConfig", "Results", "early_steps", "markdown", "plot_positions",
           "run_experiments", "write_report"]

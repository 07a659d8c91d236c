"""Flags and output that several commands share: how tokens are sampled, and score tables."""
from __future__ import annotations

import argparse
import dataclasses

from ..flow import CFG_SCHEDULES, DISTILLED, SOLVERS
from ..sampling import SamplingOptions
from .types import device, nonnegative_float, png_file, positive_float, positive_int, seed, threads


def generation_flags(parser: argparse.ArgumentParser, defaults: SamplingOptions, output: bool = True) -> None:
    parser.add_argument("--model", default="builtin", help="a pipeline directory or Hub id (default: the built-in model)")
    sampling_flags(parser, defaults)
    parser.add_argument("--cfg-schedule", default=defaults.cfg_schedule, choices=list(CFG_SCHEDULES),
                        help=f"guidance along the sequence (default: {defaults.cfg_schedule})")
    parser.add_argument("--temperature", type=nonnegative_float, default=defaults.temperature,
                        help=f"start-noise scale (default: {defaults.temperature})")
    parser.add_argument("--device", type=device, default="cpu", help="cpu or cuda (default: cpu)")
    if output:
        parser.add_argument("-o", "--output", required=True, type=png_file, help="PNG file to write")


def sampling_flags(parser: argparse.ArgumentParser, defaults: SamplingOptions) -> None:
    """--seed, --cfg and the ODE solver's flags, with their defaults from `defaults`, which `sampling` completes."""
    parser.set_defaults(sampling=defaults)
    parser.add_argument("--seed", type=seed, default=defaults.seed)
    parser.add_argument("--cfg", type=nonnegative_float, default=defaults.cfg,
                        help=f"classifier-free guidance scale (default: {defaults.cfg}; 1 = none)")
    parser.add_argument("--steps", type=positive_int, default=defaults.steps,
                        help=f"ODE steps per token (default: {defaults.steps}; the paper: 100 Euler steps)")
    parser.add_argument("--solver", default=defaults.solver, choices=[*SOLVERS, DISTILLED],
                        help=f"ODE solver, or the model's distilled few-step head with --steps its evaluations "
                             f"(eqgen distill head) (default: {defaults.solver})")
    parser.add_argument("--rho", type=positive_float, default=defaults.rho,
                        help=f"time grid (k/steps)^rho; 1 = uniform, as officially (default: {defaults.rho})")
    parser.add_argument("--threads", type=threads,
                        help="torch CPU threads (default: OMP_NUM_THREADS if set, else 1: fastest for sampling on "
                             "an idle CPU and far faster on a busy one, docs/performance.md)")


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    """The sampling options the command's flags give; its defaults for the fields it has no flag for."""
    names = {f.name for f in dataclasses.fields(SamplingOptions)}
    return args.sampling.replace(**{name: value for name, value in vars(args).items() if name in names})


def print_scores(scores: dict[str, float]) -> None:
    for name, value in scores.items():
        print(f"{name:28} {value:.3f}" if isinstance(value, float) else f"{name:28} {value}")

"""Distilled few-step heads: which way of distilling reaches the teacher's tokens in 1, 2 and 4 evaluations.

    python benchmarks/bench_distill.py                       # the built-in model, every candidate
    python benchmarks/bench_distill.py --steps 3000 --only trajectory:distilled

Each candidate (method × guidance mode × evaluations) is distilled from the same teacher with the same budget
(`eqgen distill head` with --steps, --draws and --images-per-class, smaller than the command's defaults so
that a dozen candidates fit in an hour of 2 CPU cores) into a scratch directory, then scored like the
solvers of bench_solvers.py: held-out conditions (teacher-forced renders of every class, which the students
never saw: they learn from the pipeline's own samples), the same noise, the error against a Heun-400 solve
relative to the RMS of its tokens, printed as a ratio to the paper's sampler (Euler, 100 steps), at three
settings of guidance and temperature. The teacher's own few-step solves (Euler 4, Heun 3 = 5 evaluations) show
what distillation adds. Everything is measured in this one run.
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import torch

from eqgen import Pipeline
from eqgen.distill import GUIDANCE, METHODS
from eqgen.distill_training import DistillConfig, distill_head
from eqgen.evaluation.solvers import REFERENCE, held_out_problem
from eqgen.flow import evaluations
from eqgen.training import RunConfig

BASELINES = [("euler", 100, 1.0), ("heun", 10, 1.5), ("euler", 4, 1.5), ("heun", 3, 1.5)]


SETTINGS = [(3.0, 1.0), (1.5, 1.0), (3.0, 0.8)]   # (constant guidance, temperature) of the scoring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps per candidate")
    parser.add_argument("--draws", type=int, default=2, help="lessons per condition (eqgen distill head --draws)")
    parser.add_argument("--images-per-class", type=int, default=32, help="sequences sampled per class")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--evals", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--only", nargs="+", help="candidates METHOD:GUIDANCE (default: every pair)")
    args = parser.parse_args()

    pairs = [tuple(p.split(":")) for p in args.only] if args.only else list(itertools.product(METHODS, GUIDANCE))
    pipe = Pipeline.from_pretrained(args.model)
    students, seconds = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for (method, guidance), evals in itertools.product(pairs, args.evals):
            out = Path(scratch) / f"{method}-{guidance}-{evals}"
            start = time.perf_counter()
            distill_head(args.model, out, RunConfig(steps=args.steps, batch_size=1024, ema_decay=0.99,
                                                    save_every=args.steps, device="cpu", precision="fp32"),
                         DistillConfig(evals=evals, method=method, guidance=guidance, lr=args.lr, draws=args.draws,
                                       images_per_class=args.images_per_class))
            seconds[method, guidance, evals] = time.perf_counter() - start
            students[method, guidance, evals] = Pipeline.from_pretrained(out).generator.students[evals]

    print(f"{args.model}: {args.steps} distillation steps per candidate ({args.images_per_class} sequences per class, "
          f"{args.draws} lessons per condition), scored on held-out conditions against {REFERENCE}, "
          f"{torch.get_num_threads()} threads")
    for cfg, temperature in SETTINGS:
        problem = held_out_problem(pipe, cfg, temperature=temperature)
        bar = problem.error(problem.solve(pipe.generator.head, 100, "euler", 1.0))
        print(f"\ncfg {cfg}, temperature {temperature}: {len(problem.noise)} tokens, Euler-100 error {bar:.5f}")
        print(f"{'head':<40} {'evals':>5} {'rel. error':>10} {'vs Euler 100':>12} {'distil s':>9}")
        for solver, steps, rho in BASELINES:
            error = problem.error(problem.solve(pipe.generator.head, steps, solver, rho))
            print(f"{f'{solver} {steps} steps, rho {rho}':<40} {evaluations(solver, steps):>5} {error:>10.5f} "
                  f"{error / bar:>12.2f}")
        errors = {}
        for (method, guidance, evals), student in students.items():
            errors[method, guidance, evals] = error = problem.error(problem.distilled(student))
            print(f"{f'distilled: {method}, {guidance} guidance':<40} {evals:>5} {error:>10.5f} {error / bar:>12.2f} "
                  f"{seconds[method, guidance, evals]:>9.0f}")
        for evals in args.evals:
            best = min((k for k in errors if k[2] == evals), key=errors.get)
            print(f"best at {evals} evaluation(s): {best[0]}, {best[1]} guidance, "
                  f"{errors[best] / bar:.2f}x Euler-100's error")


if __name__ == "__main__":
    main()

"""Flow-head solvers: accuracy against head evaluations per token, on a trained model.

    python benchmarks/bench_solvers.py                    # the built-in model
    python benchmarks/bench_solvers.py --model runs/gen --cfg 1

The transformer's conditions come from real tokens (held-out renders of every class, teacher forcing), so
every solver integrates the same ODEs from the same noise; each result is compared with a fine reference solve
(Heun, 400 steps): the error is the RMS token difference relative to the RMS of the reference tokens
(eqgen.evaluation.solvers). The paper's sampler (Euler, 100 steps, uniform grid) sets the bar; the table says
which solvers reach it with fewer head evaluations. Everything is measured in this one run.
"""
from __future__ import annotations

import argparse

import torch

from eqgen import Pipeline
from eqgen.evaluation.solvers import REFERENCE, solver_errors

RUNS = ([("euler", s, 1.0) for s in (100, 50, 25)] + [("euler", s, 1.5) for s in (50, 25)]
        + [("heun", s, 1.0) for s in (25, 13, 10)] + [("heun", s, rho) for rho in (1.5, 2.0) for s in (13, 10, 8, 6)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--cfg", type=float, default=3.0, help="constant guidance scale (1 = unguided)")
    parser.add_argument("--per-class", type=int, default=4, help="renders per class")
    parser.add_argument("--tokens", type=int, default=16, help="tokens per render")
    args = parser.parse_args()

    pipe = Pipeline.from_pretrained(args.model)
    rows = solver_errors(pipe, RUNS, args.cfg, args.per_class, args.tokens)
    print(f"{args.model}: {rows[0]['tokens']} tokens ({len(pipe.classes)} classes × {args.per_class} renders × "
          f"{args.tokens}), cfg {args.cfg}, reference {REFERENCE}, {torch.get_num_threads()} threads")
    bar = rows[0]["error"]
    print(f"\n{'solver':<7} {'steps':>5} {'rho':>4} {'head evals':>10} {'rel. error':>10} {'vs Euler 100':>12} "
          f"{'ms/token':>9}")
    for r in rows:
        print(f"{r['solver']:<7} {r['steps']:>5} {r['rho']:>4.1f} {r['evaluations']:>10} {r['error']:>10.5f} "
              f"{r['error'] / bar:>12.2f} {1000 * r['seconds'] / r['tokens']:>9.3f}")
    best = min((r for r in rows if r["error"] <= bar), key=lambda r: r["evaluations"])
    print(f"\nfewest head evaluations at Euler-100 accuracy or better: {best['solver']} {best['steps']} steps, "
          f"rho {best['rho']} ({best['evaluations']} evaluations, {100 / best['evaluations']:.1f}x fewer than Euler 100)")


if __name__ == "__main__":
    main()

"""Time per image: eqgen's sampler against the official algorithm, on the same weights in one run.

    python benchmarks/bench_sampling.py                       # the `demo` preset, random weights
    python benchmarks/bench_sampling.py --preset S --device cuda --lengths 16 128
    python benchmarks/bench_sampling.py --model builtin --lengths 128 1024 --batch 16

Two tables:
1. The cache alone: the windowed KV cache vs recomputing the whole prefix at every token (the official
   algorithm), with the same flow-head solver (`--steps` Euler steps). With a window the cached cost per token
   is constant, so time(N)/time(16) stays close to N/16; recomputing grows quadratically.
2. End to end: the official sampler (recompute + 100 Euler steps) vs eqgen's defaults (cache + Heun, 10 steps
   on the rho = 1.5 grid, which bench_solvers.py measures as more accurate than 100 Euler steps) vs a distilled
   head of `--distilled` evaluations (distill.py; the model's own, or a freshly made one of the same cost, and
   with its guidance distilled no unconditional branch).
"""
from __future__ import annotations

import argparse
import time

import torch

from eqgen import Pipeline
from eqgen.configs import from_preset
from eqgen.distill import StudentConfig, StudentHead
from eqgen.flow import evaluations
from eqgen.generator import GENERATOR_PRESETS, EquivariantGenerator, GeneratorConfig
from eqgen.sampling import OFFICIAL, SamplingOptions, TokenSampler

EQGEN = SamplingOptions()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_image(model, length: int, args, repeats: int, options: SamplingOptions, mode: str) -> tuple[float, float, int]:
    """Seconds per image in all and in the transformer alone (best of `repeats` runs), and the cache size
    after the last token (bytes)."""
    labels = torch.arange(args.batch) % model.config.num_classes
    best_total = best_transformer = float("inf")
    for _ in range(repeats):
        run = TokenSampler(model, labels, length, options, mode=mode, cfg=args.cfg, rng=0)
        total = transformer = 0.0
        for _ in range(length):
            sync(args.device)
            start = time.perf_counter()
            run.condition()  # the transformer step; `step` then runs the flow head's ODE on its output
            sync(args.device)
            middle = time.perf_counter()
            run.step()
            sync(args.device)
            total += time.perf_counter() - start
            transformer += middle - start
        best_total, best_transformer = min(best_total, total), min(best_transformer, transformer)
    return best_total / args.batch, best_transformer / args.batch, run.cache_nbytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=list(GENERATOR_PRESETS))
    parser.add_argument("--model", help="a pipeline directory or 'builtin' instead of --preset's random weights")
    parser.add_argument("--distilled", type=int, default=4, help="evaluations of the distilled head in table 2")
    parser.add_argument("--steps", type=int, default=25, help="Euler steps per token in table 1")
    parser.add_argument("--cfg", type=float, default=3.0, help="guidance (≠ 1 doubles the batch, as officially)")
    parser.add_argument("--batch", type=int, default=1, help="images per call (1 = interactive use)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 128, 1024])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per row (1 beyond 128 tokens)")
    parser.add_argument("--tables", type=int, nargs="+", default=[1, 2], choices=[1, 2], help="which tables to print")
    parser.add_argument("--official-up-to", type=int, help="table 2: time the official sampler only up to this "
                                                           "length (its time grows quadratically)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.model:
        model = Pipeline.from_pretrained(args.model, args.device).generator
    else:
        model = EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, args.preset)).to(args.device).eval()
    if args.distilled not in model.students:
        model.students[args.distilled] = StudentHead.from_teacher(model, StudentConfig(evals=args.distilled)).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{args.model or 'preset ' + args.preset} ({params:.1f}M parameters, window {model.config.window}, depth {model.config.depth}), "
          f"cfg {args.cfg}, batch {args.batch}, {args.device}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    euler = OFFICIAL.replace(steps=args.steps)
    time_image(model, 4, args, 1, euler, "cached")  # warm-up

    def measure(length, options, mode):
        return time_image(model, length, args, args.repeats if length <= 128 else 1, options, mode)

    short, lengths = args.lengths[0], args.lengths
    if 1 in args.tables:
        cache_table(args, measure, short, lengths, euler)
    if 2 in args.tables:
        end_to_end_table(args, measure, lengths)


def cache_table(args, measure, short, lengths, euler) -> None:
    print(f"\n1. The cache alone ({args.steps} Euler steps per token in both modes)")
    rows = {(mode, n): measure(n, euler, mode) for mode in ("cached", "recompute") for n in lengths}
    print(f"{'mode':<10} {'tokens':>6} {'s/image':>9} {'ms/token':>9} {'transformer ms/token':>21} {'cache KiB':>10}")
    for (mode, n), (total, transformer, cache) in rows.items():
        print(f"{mode:<10} {n:>6} {total:>9.3f} {1000 * total / n:>9.2f} {1000 * transformer / n:>21.2f} "
              f"{cache / 1024:>10.1f}")
    for n in lengths[1:]:
        for mode in ("cached", "recompute"):
            (t_short, tr_short, _), (t_long, tr_long, _) = rows[mode, short], rows[mode, n]
            print(f"{mode:<10} time({n})/time({short}) = {t_long / t_short:7.2f} in all, "
                  f"{tr_long / tr_short:7.2f} in the transformer (linear: {n / short:.2f})")
        print(f"recompute/cached at {n} tokens = {rows['recompute', n][0] / rows['cached', n][0]:.2f}x in all, "
              f"{rows['recompute', n][1] / rows['cached', n][1]:.2f}x in the transformer")


def end_to_end_table(args, measure, lengths) -> None:
    print(f"\n2. End to end: official (recompute, Euler 100) vs eqgen (cached, {EQGEN.solver} {EQGEN.steps} "
          f"steps, rho {EQGEN.rho}: {evaluations(EQGEN.solver, EQGEN.steps)} head evaluations per token)")
    distilled = EQGEN.replace(solver="distilled", steps=args.distilled)
    print(f"{'tokens':>6} {'official ms/token':>18} {'eqgen':>8} {'distilled':>10} {'official/eqgen':>15} "
          f"{'eqgen/distilled':>16} {'official/distilled':>19}")
    for n in lengths:
        ours, few = (1000 * measure(n, o, "cached")[0] / n for o in (EQGEN, distilled))
        if args.official_up_to is not None and n > args.official_up_to:
            print(f"{n:>6} {'-':>18} {ours:>8.3f} {few:>10.3f} {'-':>15} {ours / few:>15.2f}x {'-':>19}")
            continue
        official = 1000 * measure(n, OFFICIAL, "recompute")[0] / n
        print(f"{n:>6} {official:>18.3f} {ours:>8.3f} {few:>10.3f} {official / ours:>14.2f}x {ours / few:>15.2f}x "
              f"{official / few:>18.2f}x")


if __name__ == "__main__":
    main()

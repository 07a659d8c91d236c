"""Time per image: the windowed KV cache vs recomputing the whole prefix at every token (the official algorithm).

    python benchmarks/bench_sampling.py                       # the `demo` preset, random weights
    python benchmarks/bench_sampling.py --preset S --steps 100 --device cuda

With a window the cached sampler's cost per token is constant, so time(128)/time(16) should be close to 8;
recomputing the prefix grows faster than that. The flow head's ODE costs the same in both modes, so fewer
`--steps` make the transformer's share (and the difference) larger. Everything is measured in this one run.
"""
from __future__ import annotations

import argparse
import time

import torch

from eqgen.configs import from_preset
from eqgen.generator import GENERATOR_PRESETS, EquivariantGenerator, GeneratorConfig
from eqgen.sampling import TokenSampler


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_image(model, length: int, mode: str, args) -> tuple[float, float, int]:
    """Seconds per image in all and in the transformer alone (best of `args.repeats` runs), and the cache
    size after the last token (bytes)."""
    labels = torch.arange(args.batch) % model.config.num_classes
    best_total = best_transformer = float("inf")
    for _ in range(args.repeats):
        sampler = TokenSampler(model, labels, length, cfg=args.cfg, steps=args.steps, solver=args.solver,
                               generator=0, mode=mode)
        total = transformer = 0.0
        for _ in range(length):
            sync(args.device)
            start = time.perf_counter()
            sampler.condition()  # the transformer step; `step` then runs the flow head's ODE on its output
            sync(args.device)
            middle = time.perf_counter()
            sampler.step()
            sync(args.device)
            total += time.perf_counter() - start
            transformer += middle - start
        best_total, best_transformer = min(best_total, total), min(best_transformer, transformer)
    return best_total / args.batch, best_transformer / args.batch, sampler.cache_nbytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=list(GENERATOR_PRESETS))
    parser.add_argument("--steps", type=int, default=25, help="ODE steps per token (the paper uses 100)")
    parser.add_argument("--solver", default="euler")
    parser.add_argument("--cfg", type=float, default=3.0, help="guidance (≠ 1 doubles the batch, as officially)")
    parser.add_argument("--batch", type=int, default=1, help="images per call (1 = interactive use)")
    parser.add_argument("--lengths", type=int, nargs=2, default=[16, 128], metavar=("SHORT", "LONG"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, args.preset)).to(args.device).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"preset {args.preset} ({params:.1f}M parameters, window {model.config.window}, depth {model.config.depth}), "
          f"{args.steps} {args.solver} steps, cfg {args.cfg}, batch {args.batch}, {args.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    time_image(model, 4, "cached", args)  # warm-up

    short, long = args.lengths
    rows = {(mode, n): time_image(model, n, mode, args) for mode in ("cached", "recompute") for n in (short, long)}
    print(f"\n{'mode':<10} {'tokens':>6} {'s/image':>9} {'ms/token':>9} {'transformer ms/token':>21} {'cache KiB':>10}")
    for (mode, n), (total, transformer, cache) in rows.items():
        print(f"{mode:<10} {n:>6} {total:>9.3f} {1000 * total / n:>9.2f} {1000 * transformer / n:>21.2f} "
              f"{cache / 1024:>10.1f}")
    print()
    for mode in ("cached", "recompute"):
        (t_short, tr_short, _), (t_long, tr_long, _) = rows[mode, short], rows[mode, long]
        print(f"{mode:<10} time({long})/time({short}) = {t_long / t_short:5.2f} in all, "
              f"{tr_long / tr_short:5.2f} in the transformer (linear: {long / short:.2f})")
    print(f"recompute/cached at {long} tokens = {rows['recompute', long][0] / rows['cached', long][0]:.2f}x in all, "
          f"{rows['recompute', long][1] / rows['cached', long][1]:.2f}x in the transformer")


if __name__ == "__main__":
    main()

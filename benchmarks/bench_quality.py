"""Sample quality of two or more samplers of one model, with the sampling noise of every figure.

    python benchmarks/bench_quality.py --model runs/distilled --samplers heun:10 distilled:4
    python benchmarks/bench_quality.py --samplers heun:10 euler:100 --seeds 0 1 2 3

For each sampler and each seed: `eval samples`'s landscape scores (landscape-FID, precision, recall, detail
ratio, class accuracy; --per-class images of every class) and `eval long`'s drift at --multiple × the training
width (the last quarter of offsets: colour distance, texture and seam ratios; one panorama per class of
--classes). The table gives each figure's mean and standard deviation over the seeds, and for every sampler
after the first its difference from the first with the standard error of that difference: a difference within
two standard errors is sampling noise ("same"), beyond it "better" or "worse". Everything in this one run.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from eqgen import Pipeline
from eqgen.evaluation.long_images import drift_summary, panorama_drift
from eqgen.evaluation.scores import landscape_scores
from eqgen.sampling import PANORAMA, SamplingOptions

# figure -> whether higher is better (None: closer to 1 is better)
FIGURES = {"landscape_fid": False, "landscape_precision": True, "landscape_recall": True, "detail_ratio": None,
           "class_accuracy": True, "drift_colour_z": False, "drift_texture_ratio": None, "drift_seam_ratio": None}


def scores(pipe, solver: str, steps: int, seed: int, args) -> dict[str, float]:
    out = landscape_scores(pipe, args.per_class, options=SamplingOptions(seed=seed, solver=solver, steps=steps))
    drifts = [drift_summary(panorama_drift(pipe, cls, args.multiple, 1, PANORAMA.replace(seed=seed, solver=solver,
                                                                                           steps=steps)))
              for cls in args.classes]
    for key in ("colour_z", "texture_ratio", "seam_ratio"):
        out[f"drift_{key}"] = float(np.mean([d[key][1] for d in drifts]))
    return out


def verdict(figure: str, diff: float, se: float, first: float, other: float) -> str:
    if abs(diff) <= 2 * se:
        return "same"
    better = FIGURES[figure]
    if better is None:
        return "better" if abs(other - 1) < abs(first - 1) else "worse"
    return "better" if (diff > 0) == better else "worse"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--samplers", nargs="+", default=["heun:10", "distilled:4"], help="SOLVER:STEPS ...")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=16)
    parser.add_argument("--multiple", type=int, default=32)
    parser.add_argument("--classes", nargs="+", default=["alpine", "coast"])
    args = parser.parse_args()

    pipe = Pipeline.from_pretrained(args.model)
    samplers = [(s.split(":")[0], int(s.split(":")[1])) for s in args.samplers]
    table, seconds = {}, {}
    for solver, steps in samplers:
        start = time.perf_counter()
        table[solver, steps] = [scores(pipe, solver, steps, seed, args) for seed in args.seeds]
        seconds[solver, steps] = time.perf_counter() - start
    print(f"{args.model}: seeds {args.seeds}, {args.per_class} images per class, drift at {args.multiple}x width "
          f"({', '.join(args.classes)}), {torch.get_num_threads()} threads")
    names = [f"{solver} {steps}" for solver, steps in samplers]
    print(f"\n{'figure':<22}" + "".join(f"{name:>22}" for name in names) + "".join(
        f"{'diff vs ' + names[0]:>30}" for _ in names[1:]))
    n = len(args.seeds)
    for figure in FIGURES:
        values = [np.array([row[figure] for row in table[s]]) for s in samplers]
        cells = "".join(f"{v.mean():>14.3f} ± {v.std(ddof=1) if n > 1 else math.nan:<5.3f}" for v in values)
        diffs = ""
        for v in values[1:]:
            diff = v.mean() - values[0].mean()
            se = math.sqrt((v.var(ddof=1) + values[0].var(ddof=1)) / n) if n > 1 else math.nan
            diffs += f"{diff:>+14.3f} ± {se:<5.3f} {verdict(figure, diff, se, values[0].mean(), v.mean()):>8}"
        print(f"{figure:<22}{cells}{diffs}")
    print("\nseconds per sampler (all seeds): " + ", ".join(f"{name} {seconds[s]:.0f}" for name, s in zip(names, samplers)))


if __name__ == "__main__":
    main()

"""Drift on long images against how the generator was trained: the remedies side by side, at equal steps.

    python benchmarks/bench_drift.py --tokenizer runs/tok --cache runs/gen/token_cache      # ~25 min on 2 cores

A model whose training sequences are shorter than its receptive field (window × depth tokens) can learn how
far each token is from the image's left edge, and drift once that edge is out of view. Variants (the demo
preset, the same token cache, seed, steps and batch):

  edge-short     sequences of --short tokens from the left edge of each cached row (the official setting, with
                 images shorter than the receptive field)
  interior-short sequences of --short tokens at random offsets: the first token is rarely an edge
  equivariant    the paper's "real equivariant" crops of window + 1 tokens at random offsets
  edge-wide      sequences of --wide tokens from the left edge (training on wider images)

Each model then generates --multiple × 16-token panoramas of every --classes class, scored per 16-token window
against ground-truth renders (eqgen.evaluation.long_images): colour distance (z), texture and seam ratios,
first vs last quarter of the offsets. Equal pairs mean no drift.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from eqgen import Pipeline
from eqgen.configs import from_preset
from eqgen.evaluation.long_images import drift_summary, drift_table, ground_truth, offset_stats
from eqgen.generator import GENERATOR_PRESETS, GeneratorConfig, receptive_field
from eqgen.generator_training import GENERATOR_TRAIN_PRESETS, GeneratorTrainConfig, train_generator
from eqgen.training import RunConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="the tokenizer directory the cache was made with")
    parser.add_argument("--cache", required=True, help="a token cache of wide rows (eqgen train generator made it)")
    parser.add_argument("--cache-images", type=int, default=1000)
    parser.add_argument("--cache-width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--short", type=int, default=8, help="tokens per short training sequence")
    parser.add_argument("--wide", type=int, default=48, help="tokens per wide training sequence")
    parser.add_argument("--classes", nargs="+", default=["alpine", "coast"])
    parser.add_argument("--multiple", type=int, default=32, help="panorama width in 16-token windows")
    parser.add_argument("-n", "--images", type=int, default=2, help="panoramas per class")
    parser.add_argument("--out", help="keep the trained variants here (default: a temporary directory)")
    args = parser.parse_args()

    demo = from_preset(GeneratorConfig, GENERATOR_PRESETS, "demo")
    window, field = demo.window, receptive_field(demo.window, demo.depth)
    variants = {"edge-short": ("edge", args.short), "interior-short": ("interior", args.short),
                "equivariant": ("equivariant", window + 1), "edge-wide": ("edge", args.wide)}
    print(f"demo preset: window {window}, receptive field {field} tokens; {args.steps} steps of batch {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        results = {}
        for name, (crops, seq_len) in variants.items():
            train = from_preset(GeneratorTrainConfig, GENERATOR_TRAIN_PRESETS, "demo", crops=crops, seq_len=seq_len)
            run = RunConfig(steps=args.steps, batch_size=args.batch, save_every=args.steps, ema_decay=0.998)
            train_generator(args.tokenizer, "landscapes", root / name, run, train, preset="demo",
                            cache_dir=args.cache, cache_images=args.cache_images, cache_width=args.cache_width)
            pipe = Pipeline.from_pretrained(root / name)
            window_px = 16 * pipe.token_width
            width = window_px * args.multiple
            results[name] = {}
            for cls in args.classes:
                panoramas = np.stack([pipe.panorama(cls, width, seed=i, progress=False) for i in range(args.images)])
                truth = ground_truth(cls, 8, width, pipe.height)
                rows = drift_table(offset_stats(panoramas, window_px), offset_stats(truth, window_px))
                results[name][cls] = drift_summary(rows)

    print(f"\nfirst -> last quarter of {args.multiple} windows of 16 tokens ({args.images} panoramas per class)")
    print(f"{'variant':<15} {'seq':>4} {'class':<8} {'colour z':>14} {'texture ratio':>14} {'seam ratio':>14}")
    for name, per_class in results.items():
        for cls, summary in per_class.items():
            cells = [f"{a:6.2f}->{b:<6.2f}" for a, b in summary.values()]
            print(f"{name:<15} {variants[name][1]:>4} {cls:<8} " + " ".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    main()

"""The seam of outpainting: how sharp is the join between a given image and its continuation?

    python benchmarks/bench_outpainting.py --model runs/gen       # a trained pipeline (default: built-in)

For every class, the left part of a landscape render is continued to the right (`Pipeline.panorama(left=...)`).
The seam ratio is the mean |Δ| between the two columns either side of the join, against the mean |Δ| of the
neighbouring-column pairs within 32 px of it on both sides (1 = the join is like any other pair of columns).
The same ratio of the full render at the same place is the reference. Measured with no blend and with the
pipeline's cross-fade, on the same tokens.
"""
from __future__ import annotations

import argparse

import numpy as np

from eqgen import Pipeline
from eqgen.data.landscapes import render
from eqgen.imageio import from_uint8
from eqgen.pipeline import SEAM_BLEND, join

NEAR = 32  # px either side of the join that give the typical neighbouring-column difference


def seam(image: np.ndarray, x: int) -> tuple[float, float]:
    """(mean |Δ| across the join at x, the same over the NEAR column pairs either side) on the 0-255 scale."""
    jumps = np.abs(np.diff(image.astype(np.float64), axis=1)).mean(axis=(0, 2))  # jumps[i]: columns i, i+1
    near = np.concatenate([jumps[x - 1 - NEAR:x - 1], jumps[x:x + NEAR]])
    return float(jumps[x - 1]), float(near.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--left", type=int, default=512, help="px of the render given as the left image")
    parser.add_argument("--width", type=int, default=768, help="panorama width in px")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.model)
    L = args.left
    print(f"left {L} px of a {args.width}-px render continued to {args.width} px; blend {SEAM_BLEND} columns")
    print(f"{'class':<9} {'seed':>4} {'join |Δ|':>9} {'near |Δ|':>9} {'ratio, none':>12} "
          f"{'ratio, blend':>13} {'ratio, render':>14}")
    ratios = []
    for cls in pipe.classes:
        for seed in range(args.seeds):
            truth = render(cls, args.width, pipe.height, seed)
            plain = pipe.panorama(cls, args.width, left=from_uint8(truth[:, :L]), seed=seed, blend=0, progress=False)
            assert np.array_equal(plain[:, :L], truth[:, :L])
            (j, n), (jb, nb), (jt, nt) = (seam(x, L) for x in (plain, join(plain.copy(), L, SEAM_BLEND), truth))
            ratios.append((j / n, jb / nb, jt / nt))
            print(f"{cls:<9} {seed:4d} {j:9.2f} {n:9.2f} {j / n:12.2f} {jb / nb:13.2f} {jt / nt:14.2f}", flush=True)
    none, blend, reference = np.array(ratios).mean(axis=0)
    print(f"mean seam ratio: no blend {none:.2f}, blend {blend:.2f}, the render itself {reference:.2f}")


if __name__ == "__main__":
    main()

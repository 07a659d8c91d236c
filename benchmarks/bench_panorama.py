"""Panoramas at 1×, 8× and 64× the training width: time and peak memory of the token phase (windowed KV
cache) and of the tiled decode, and the seam error of tiled decoding against one whole decode.

    python benchmarks/bench_panorama.py --model runs/gen          # a trained pipeline (default: built-in)

Peak memory is the process's extra peak resident set during the phase (VmHWM, reset through
/proc/self/clear_refs). Everything is measured in this one run on the same weights.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from eqgen import Pipeline
from eqgen.sampling import PANORAMA

from common import peak_memory_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlap", type=int, default=8)
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.model)
    base = pipe.generator.config.train_tokens * pipe.token_width
    print(f"training width {base} px, sampler {PANORAMA}, tiles of {args.tile} tokens overlapping by {args.overlap}")
    print(f"{'width':>8} {'tokens s':>9} {'ms/token':>9} {'tokens MB':>10} {'decode s':>9} {'decode MB':>10}")
    rows, kept = [], {}
    for m in args.multiples:
        width = base * m
        out = {}

        def tokens_phase():
            start = time.perf_counter()
            out["tokens"] = pipe.panorama_tokens("alpine", width)
            out["t_tokens"] = time.perf_counter() - start

        def decode_phase():
            start = time.perf_counter()
            canvas = np.empty((pipe.height, width, 3), np.uint8)
            for x0, pixels in pipe.decode_tiles(out["tokens"], args.tile, args.overlap):
                canvas[:, x0:x0 + pixels.shape[1]] = pixels
            out["t_decode"], out["canvas"] = time.perf_counter() - start, canvas

        mem_tokens = peak_memory_mb(tokens_phase, torch.device("cpu"))
        mem_decode = peak_memory_mb(decode_phase, torch.device("cpu"))
        n = out["tokens"].shape[1]
        rows.append((width, out["t_tokens"], mem_tokens))
        kept[m] = out
        print(f"{width:8d} {out['t_tokens']:9.2f} {1000 * out['t_tokens'] / n:9.2f} {mem_tokens:10.1f} "
              f"{out['t_decode']:9.2f} {mem_decode:10.1f}", flush=True)
    (w1, t1, m1), (wn, tn, mn) = rows[0], rows[-1]
    print(f"time({wn // w1}×)/time(1×) = {tn / t1:.1f} (linear = {wn // w1}); "
          f"token-phase memory {wn // w1}×/1× = {mn / max(m1, 1e-6):.2f}")
    # Seam error: the tiled decode against one whole decode, where the whole decode fits.
    middle = kept[args.multiples[1] if len(args.multiples) > 1 else args.multiples[0]]
    whole = (pipe.decode(middle["tokens"])[0].permute(1, 2, 0).add(1).mul(127.5)).numpy()
    diff = np.abs(middle["canvas"].astype(np.float64) - whole)
    per_column = diff.mean(axis=(0, 2))
    print(f"tiled vs whole decode at {middle['canvas'].shape[1]} px: mean |Δ| {diff.mean():.2f}, "
          f"max per column {per_column.max():.2f} (0-255 scale)")


if __name__ == "__main__":
    main()

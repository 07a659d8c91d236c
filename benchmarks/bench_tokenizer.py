"""Tokenizer throughput and peak memory: encode and decode at 1× and 8× the square width.

    python benchmarks/bench_tokenizer.py [--preset demo] [--batch 8] [--device auto] [--widths 1,8]

Random weights (speed does not depend on them). Time: the best of `--repeats` timed runs after one warm-up,
under `torch.inference_mode`. Peak memory: on CUDA, `torch.cuda.max_memory_allocated` above what was allocated
before the call; on CPU (Linux), the process's peak resident set (VmHWM, reset through /proc/self/clear_refs)
above its resident set before the call — so it includes allocator slack, not only live tensors.
"""
from __future__ import annotations

import argparse

import torch

from eqgen.configs import from_preset
from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig
from eqgen.devices import resolve_device

from common import peak_memory_mb, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=sorted(TOKENIZER_PRESETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--widths", default="1,8", help="image widths as multiples of the height (default: 1,8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, args.preset)).to(device).eval()
    cfg = model.config
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"tokenizer {args.preset}: {params:.1f}M parameters, {cfg.height} px tall, {model.token_width} px per "
          f"token, D={cfg.embed_dim}; device {device} ({torch.get_num_threads()} threads); batch {args.batch}")
    print(f"{'width':>12} {'tokens':>6} {'op':>6} {'images/s':>9} {'ms/image':>9} {'tokens/s':>9} {'peak MB':>8}")
    per_image = {}
    for multiple in (int(m) for m in args.widths.split(",")):
        width = cfg.height * multiple
        images = torch.rand(args.batch, 3, cfg.height, width, device=device) * 2 - 1
        with torch.inference_mode():
            tokens = model.encode(images)
            for op, fn in (("encode", lambda: model.encode(images)), ("decode", lambda: model.decode(tokens))):
                t = seconds(fn, device, args.repeats)
                memory = peak_memory_mb(fn, device)
                per_image[op, multiple] = t / args.batch
                print(f"{f'{width} ({multiple}x)':>12} {tokens.shape[1]:>6} {op:>6} {args.batch / t:>9.1f} "
                      f"{1000 * t / args.batch:>9.2f} {args.batch * tokens.shape[1] / t:>9.0f} "
                      f"{'n/a' if memory is None else f'{memory:.0f}':>8}")
    multiples = sorted({m for _, m in per_image})
    if len(multiples) > 1:
        lo, hi = multiples[0], multiples[-1]
        for op in ("encode", "decode"):
            ratio = per_image[op, hi] / per_image[op, lo]
            print(f"{op}: a {hi}x-wide image costs {ratio:.1f}x the time of a {lo}x one "
                  f"({ratio / (hi / lo):.2f}x per column)")


if __name__ == "__main__":
    main()

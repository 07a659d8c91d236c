"""Images per second in the paper's 256² setting (16 tokens of 256 channels), random weights, one GPU.

    python benchmarks/bench_gpu.py                     # S and B presets, fp32 vs bf16 autocast
    python benchmarks/bench_gpu.py --presets S --batch 32 --steps 100

Per preset and precision: generator sampling (windowed KV cache, batched CFG, Euler) and the paper
tokenizer's decode, measured side by side in this one run.
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch

from eqgen.configs import from_preset
from eqgen.generator import GENERATOR_PRESETS, EquivariantGenerator, GeneratorConfig
from eqgen.sampling import generate_tokens
from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig


def timed(fn, device: str, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["S", "B"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = args.device
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, batch {args.batch}, "
          f"{args.steps} Euler steps, cfg {args.cfg}, 16 tokens")
    tokenizer = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, "paper")).to(device).eval()
    print(f"{'model':8} {'precision':9} {'sample img/s':>12} {'decode img/s':>12} {'end-to-end img/s':>16}")
    for name in args.presets:
        torch.manual_seed(0)
        model = EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, name)).to(device).eval()
        labels = torch.arange(args.batch, device=device) % model.config.num_classes
        for precision in ("fp32", "bf16"):
            autocast = torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
            holder = {}

            def sample():
                with torch.no_grad(), autocast:
                    holder["tokens"] = generate_tokens(model, labels, 16, cfg=args.cfg, steps=args.steps,
                                                       rng=torch.Generator(device).manual_seed(0))

            def decode():
                with torch.no_grad(), autocast:
                    tokenizer.decode(holder["tokens"].float())

            t_sample = timed(sample, device)
            t_decode = timed(decode, device)
            n = args.batch
            print(f"{name:8} {precision:9} {n / t_sample:12.1f} {n / t_decode:12.1f} {n / (t_sample + t_decode):16.1f}",
                  flush=True)


if __name__ == "__main__":
    main()

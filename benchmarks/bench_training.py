"""Generator training throughput: the token cache vs encoding every batch on the fly, and the step's
model-FLOPs utilisation against this machine's measured matmul ceiling.

    python benchmarks/bench_training.py                       # demo tokenizer + generator, random weights
    python benchmarks/bench_training.py --generator S --tokenizer paper --batch 32 --device cuda

Three ways to feed the same training step (AdamW on the flow-matching loss, batch × tokens of the preset):
  cache      rows of a memory-mapped token cache (eqgen's way: images are encoded once, with flips);
  encode     images already in memory, encoded by the tokenizer every step (the official way, minus the
             image loading);
  render     images rendered by the landscapes renderer and then encoded every step (the official way, with
             rendering standing in for loading and decoding image files).
Speed does not depend on the weights, so both models are randomly initialised. MFU = the step's FLOPs
(torch.utils.flop_counter, forward + backward) per second over the best fp32 matmul rate measured here.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from eqgen.configs import from_preset
from eqgen.data.sources import ImageSource
from eqgen.generator import GENERATOR_PRESETS, EquivariantGenerator, GeneratorConfig
from eqgen.token_cache import build_token_cache
from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig
from eqgen.devices import resolve_device

from common import seconds


def matmul_ceiling(device: torch.device, n: int = 2048) -> float:
    """The best fp32 FLOP/s of an n×n matmul on this device."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / seconds(lambda: a @ b, device, repeats=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", default="demo", choices=list(GENERATOR_PRESETS))
    parser.add_argument("--tokenizer", default="demo", choices=list(TOKENIZER_PRESETS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32, help="tokens per training sequence")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (best of them)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device(resolve_device(args.device))

    torch.manual_seed(0)
    tokenizer = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, args.tokenizer)).to(device).eval()
    config = from_preset(GeneratorConfig, GENERATOR_PRESETS, args.generator, token_dim=tokenizer.config.embed_dim,
                         num_classes=8)
    model = EquivariantGenerator(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.02)
    height, width = tokenizer.config.height, args.tokens * tokenizer.token_width
    source = ImageSource("landscapes", height, width)
    batches = source.batches(args.batch)
    images, labels = next(batches)
    images, labels = images.to(device), labels.to(device)

    def train_step(means: torch.Tensor, y: torch.Tensor) -> None:
        loss = model(tokenizer.sample(means.to(device)) * tokenizer.config.latent_scale, y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return tokenizer.encode(x)

    with tempfile.TemporaryDirectory() as tmp:
        cache = build_token_cache(tokenizer, source, tmp, num_images=4 * args.batch, device=device)
        rows = torch.randint(0, len(cache), (args.batch,)).numpy()
        variants = {
            "cache": lambda: train_step(*cache.rows(rows)),
            "encode": lambda: train_step(encode(images), labels),
            "render": lambda: train_step(encode(next(batches)[0].to(device)), labels),
        }
        timings = {name: seconds(fn, device, args.steps) for name, fn in variants.items()}

    tokens = encode(images)
    with FlopCounterMode(display=False) as counter:
        train_step(tokens, labels)
    flops, ceiling = counter.get_total_flops(), matmul_ceiling(device)
    print(f"generator {args.generator} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M), tokenizer "
          f"{args.tokenizer}, batch {args.batch} × {args.tokens} tokens ({height}×{width} px), {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"\n{'feed':<8} {'s/step':>8} {'img/s':>8} {'vs cache':>9}")
    for name, t in timings.items():
        print(f"{name:<8} {t:>8.3f} {args.batch / t:>8.1f} {timings['cache'] / t:>8.2f}x")
    print(f"\ncache is {timings['encode'] / timings['cache']:.2f}x faster than encoding in memory, "
          f"{timings['render'] / timings['cache']:.2f}x faster than rendering + encoding")
    print(f"training step: {flops / 1e9:.2f} GFLOP (forward + backward); measured fp32 matmul ceiling "
          f"{ceiling / 1e9:.1f} GFLOP/s; step at {flops / timings['cache'] / 1e9:.1f} GFLOP/s = "
          f"MFU {100 * flops / timings['cache'] / ceiling:.1f}%")


if __name__ == "__main__":
    main()

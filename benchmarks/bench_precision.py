"""Training step time in fp32 against bf16 autocast (`--precision`), for the tokenizer and the generator.

    python benchmarks/bench_precision.py                      # demo presets, this machine's CPU
    python benchmarks/bench_precision.py --device cuda --tokenizer paper --generator S --batch 32

One optimizer step each, as `eqgen train` takes it (forward under autocast, fp32 parameters and Adam state):
the tokenizer on --batch landscapes (pixel L1, noisy posterior), the generator on --batch
sequences of --tokens tokens (the flow-matching loss). Random weights: speed does not depend on them. Where
the CPU has no native bf16 (AVX512-BF16 or AMX), bf16 is emulated and slower, so `--precision auto` keeps
fp32 there.
"""
from __future__ import annotations

import argparse
import contextlib

import torch

from eqgen.configs import from_preset
from eqgen.data.sources import ImageSource
from eqgen.generator import GENERATOR_PRESETS, EquivariantGenerator, GeneratorConfig
from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig
from eqgen.devices import native_bf16, resolve_device

from common import seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default="demo", choices=list(TOKENIZER_PRESETS))
    parser.add_argument("--generator", default="demo", choices=list(GENERATOR_PRESETS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32, help="tokens per generator training sequence")
    parser.add_argument("--width", type=int, default=128, help="tokenizer training image width (px)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (best of them)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)

    torch.manual_seed(0)
    tokenizer = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, args.tokenizer)).to(device)
    generator = EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, args.generator,
                                                 token_dim=tokenizer.config.embed_dim, num_classes=8)).to(device)
    tok_opt = torch.optim.Adam(tokenizer.parameters(), lr=1e-4)
    gen_opt = torch.optim.AdamW(generator.parameters(), lr=1e-4)
    images, labels = next(ImageSource("landscapes", tokenizer.config.height, args.width).batches(args.batch))
    images, labels = images.to(device), labels.to(device)
    tokens = torch.randn(args.batch, args.tokens, tokenizer.config.embed_dim, device=device)

    def step(model, opt, loss_fn, dtype):
        autocast = contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
        with autocast:
            loss = loss_fn(model)
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()

    def tokenizer_loss(model):
        recon, _, _ = model(images)
        return (recon.float() - images).abs().mean()

    models = {"tokenizer": (tokenizer, tok_opt, tokenizer_loss),
              "generator": (generator, gen_opt, lambda model: model(tokens, labels))}
    print(f"tokenizer {args.tokenizer} on {args.batch} images of {tokenizer.config.height}×{args.width} px, "
          f"generator {args.generator} on {args.batch} × {args.tokens} tokens; {device}, "
          f"{torch.get_num_threads()} threads, native bf16: {native_bf16(device)}, torch {torch.__version__}")
    print(f"\n{'model':<10} {'fp32 s/step':>12} {'bf16 s/step':>12} {'bf16 speed-up':>14}")
    for name, (model, opt, loss_fn) in models.items():
        fp32, bf16 = (seconds(lambda: step(model, opt, loss_fn, dtype), device, args.repeats)
                      for dtype in (None, torch.bfloat16))
        print(f"{name:<10} {fp32:>12.3f} {bf16:>12.3f} {fp32 / bf16:>13.2f}x")


if __name__ == "__main__":
    main()

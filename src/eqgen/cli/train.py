"""`eqgen train tokenizer | generator`: the training commands and the flags they share."""
from __future__ import annotations

import argparse
import dataclasses

from ..devices import PRECISIONS
from .types import (device, nonnegative_float, nonnegative_int, output_dir, positions, positive_float, positive_int, seed, unit_interval)


def _training_flags(parser: argparse.ArgumentParser, preset: str, presets: dict) -> None:
    """The core flags every model-training command shares."""
    parser.add_argument("--preset", default=preset, choices=list(presets),
                        help=f"model size preset (default: {preset})")
    parser.add_argument("--data", default="landscapes", help="'landscapes' (built in) or an image folder, one subfolder per class")
    run_flags(parser, steps=5000, batch_size=32, what="images")


def run_flags(parser: argparse.ArgumentParser, steps: int, batch_size: int, what: str,
              changeable: str = "--lr, --warmup, --ema, --device, --precision (and --betas, --decay-every)") -> None:
    """The flags of a run of the training loop (training.py): where, how long, resuming, device."""
    parser.add_argument("--out", required=True, type=output_dir,
                        help="run directory: checkpoints, metrics.jsonl, the trained model")
    parser.add_argument("--steps", type=positive_int, default=steps,
                        help="optimizer steps in total (may be raised with --resume)")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size, help=f"{what} per step and process")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint, given the flags it was started with; "
                             f"of those, --steps, --save-every, {changeable} may change and apply from there on, "
                             "any other change is refused")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="bf16 autocast or fp32; auto: bf16 on CUDA and on CPUs with AVX512-BF16/AMX")
    parser.add_argument("--lr", type=positive_float, help="learning rate (default: the preset's; applies with --resume)")
    parser.add_argument("--warmup", type=nonnegative_int,
                        help="linear warm-up steps (default: the preset's; applies with --resume)")
    parser.add_argument("--save-every", type=positive_int, default=500,
                        help="checkpoint every N steps (applies with --resume)")
    parser.add_argument("--ema", type=unit_interval, default=0.999,
                        help="EMA decay, in [0, 1) (applies with --resume)")


def run_config(args: argparse.Namespace):
    from ..training import RunConfig

    return RunConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, ema_decay=args.ema,
                     save_every=args.save_every, device=args.device, precision=args.precision)


def add_train(commands) -> None:
    from ..generator import GENERATOR_PRESETS
    from ..tokenizer import TOKENIZER_PRESETS

    train = commands.add_parser("train", help="train a tokenizer or a generator (resumable, DDP via torchrun)")
    models = train.add_subparsers(dest="model", required=True, metavar="MODEL")

    tok = models.add_parser("tokenizer", help="train the column tokenizer on --data",
                            description="Trains the column autoencoder; --out becomes a tokenizer directory "
                                        "(config.json with the measured latent scale + model.safetensors).")
    _training_flags(tok, "demo", TOKENIZER_PRESETS)
    tok.add_argument("--width", type=positive_int, help="training image width in pixels (default: the preset's)")
    tok.add_argument("--lpips", help="LPIPS weights (VGG16 + LPIPS heads, safetensors) for the perceptual loss")
    tok.add_argument("--betas", type=unit_interval, nargs=2, metavar=("B1", "B2"),
                     help="Adam betas (default: the preset's)")
    tok.add_argument("--decay-every", type=nonnegative_int,
                     help="learning rate ×0.2 every N steps after warm-up; 0 = never (default: the preset's)")
    tok.add_argument("--adversarial-start", type=nonnegative_int, help="step at which the PatchGAN loss starts")
    tok.add_argument("--decoder-only", action="store_true", help="second stage: fine-tune the decoder only "
                                                                 "(with --init-from)")
    tok.add_argument("--init-from", help="a trained tokenizer directory to start from, or a model directory (or "
                                          "'builtin') whose tokenizer to start from")
    tok.add_argument("--noise-std", type=nonnegative_float,
                     help="largest std of the noise posterior (default: the preset's)")
    tok.add_argument("--grid-rows", type=positive_int, help="tokens on a 2-D grid of this many rows, raster order "
                                                            "(the paper's AR-MAR-2D baseline); default: columns")
    tok.set_defaults(run=_train_tokenizer)

    gen = models.add_parser("generator", help="train the generator on cached tokens of --data",
                            description="Encodes --data once into a token cache, then trains; --out becomes a "
                                        "model directory for --model. Multi-GPU: torchrun --nproc_per_node N "
                                        "$(which eqgen) train generator ...")
    _training_flags(gen, "demo", GENERATOR_PRESETS)
    gen.add_argument("--tokenizer", required=True, help="a trained tokenizer directory (eqgen train tokenizer --out), "
                                                        "or a model directory whose tokenizer to use")
    gen.add_argument("--cache", type=output_dir, help="token cache directory (default: OUT/token_cache)")
    gen.add_argument("--cache-images", type=positive_int, default=20000,
                     help="images to encode into the cache (default: 20000)")
    gen.add_argument("--cache-width", type=positive_int, help="pixel width of the cached images (default: square); "
                                                              "wider rows let training take interior crops")
    gen.add_argument("--seq-len", type=positive_int,
                     help="tokens per training sequence (default: the preset's, else the cached width)")
    gen.add_argument("--crops", default="interior", help="edge, interior or equivariant (default: interior)")
    gen.add_argument("--window", type=nonnegative_int, help="attention window (default: the preset's); 0 = full causal")
    gen.add_argument("--train-positions", type=positions, help="train the loss only on these positions, e.g. 0,2,4,6")
    gen.add_argument("--init-from", help="a pipeline directory (or 'builtin') whose generator to fine-tune")
    gen.add_argument("--rope-shift", type=positive_int,
                     help="random RoPE shift range (default: the preset's, 16); 1 = none")
    gen.set_defaults(run=_train_generator)


def _train_tokenizer(args: argparse.Namespace) -> None:
    from ..configs import from_preset
    from ..tokenizer_training import TOKENIZER_TRAIN_PRESETS, TokenizerTrainConfig, train_tokenizer

    presets = TOKENIZER_TRAIN_PRESETS
    train = from_preset(TokenizerTrainConfig, presets, args.preset if args.preset in presets else "paper")
    for flag, field in (("lr", "lr"), ("warmup", "warmup_steps"), ("width", "image_width"), ("betas", "betas"),
                        ("decay_every", "decay_every")):
        if getattr(args, flag) is not None:
            setattr(train, field, getattr(args, flag))
    train = dataclasses.replace(train, decoder_only=args.decoder_only, init_from=args.init_from)  # re-validates
    if args.lpips:
        train.losses.perceptual_weights = args.lpips
    if args.adversarial_start is not None:
        train.losses.adversarial_start = args.adversarial_start
    train_tokenizer(args.data, args.out, run_config(args), preset=args.preset, resume=args.resume, train=train,
                    grid_rows=args.grid_rows, noise_std=args.noise_std)


def _train_generator(args: argparse.Namespace) -> None:
    from ..configs import from_dict
    from ..generator_training import GENERATOR_TRAIN_PRESETS, GeneratorTrainConfig, train_generator

    train = from_dict(GeneratorTrainConfig, {**GENERATOR_TRAIN_PRESETS.get(args.preset, {}), "crops": args.crops,
                                             "train_positions": args.train_positions,
                                             "init_from": args.init_from})
    for flag, field in (("lr", "lr"), ("warmup", "warmup_steps"), ("seq_len", "seq_len")):
        if getattr(args, flag) is not None:
            setattr(train, field, getattr(args, flag))
    overrides = {}
    if args.window is not None:
        overrides["window"] = args.window or None
    if args.rope_shift is not None:
        overrides["rope_shift"] = args.rope_shift
    train_generator(args.tokenizer, args.data, args.out, run_config(args), train, preset=args.preset,
                    resume=args.resume, cache_dir=args.cache, cache_images=args.cache_images,
                    cache_width=args.cache_width, **overrides)

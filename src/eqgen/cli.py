"""The `eqgen` command: one small function per command, each calling the library.

Every user mistake raises `EqgenError`; `main` prints it as one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys

from .errors import EqgenError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eqgen", description="Equivariant Image Modeling: column tokens, any width.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands)
    return parser


def _training_flags(parser: argparse.ArgumentParser, preset: str) -> None:
    """The core flags every training command shares."""
    parser.add_argument("--preset", default=preset, help=f"model size preset (default: {preset})")
    parser.add_argument("--data", default="landscapes", help="'landscapes' (built in) or an image folder, one subfolder per class")
    parser.add_argument("--out", required=True, help="run directory: checkpoints, metrics.jsonl, the trained model")
    parser.add_argument("--steps", type=int, default=5000, help="optimizer steps in total (default: 5000)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step and process (default: 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    parser.add_argument("--warmup", type=int, help="linear warm-up steps (default: the preset's)")
    parser.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (default: 500)")
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay (default: 0.999)")


def _run_config(args: argparse.Namespace):
    from .training import RunConfig

    for flag in ("steps", "batch_size", "save_every"):
        if getattr(args, flag) <= 0:
            raise EqgenError(f"--{flag.replace('_', '-')} must be positive")
    return RunConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, ema_decay=args.ema,
                     save_every=args.save_every, device=args.device)


def _add_train(commands) -> None:
    train = commands.add_parser("train", help="train a tokenizer or a generator (resumable, DDP via torchrun)")
    models = train.add_subparsers(dest="model", required=True, metavar="MODEL")

    gen = models.add_parser("generator", help="train the generator on cached tokens of --data",
                            description="Encodes --data once into a token cache, then trains; --out becomes a "
                                        "model directory for --model. Multi-GPU: torchrun --nproc_per_node N "
                                        "$(which eqgen) train generator ...")
    _training_flags(gen, "demo")
    gen.add_argument("--tokenizer", required=True, help="a trained tokenizer directory (eqgen train tokenizer --out)")
    gen.add_argument("--cache", help="token cache directory (default: OUT/token_cache)")
    gen.add_argument("--cache-images", type=int, default=20000, help="images to encode into the cache (default: 20000)")
    gen.add_argument("--cache-width", type=int, help="pixel width of the cached images (default: square); wider "
                                                     "rows let training take interior crops")
    gen.add_argument("--seq-len", type=int, default=0, help="tokens per training sequence (default: the cached width)")
    gen.add_argument("--crops", default="interior", help="edge, interior or equivariant (default: interior)")
    gen.add_argument("--window", type=int, help="attention window (default: the preset's); 0 = full causal")
    gen.add_argument("--train-positions", help="train the loss only on these positions, e.g. 0,2,4,6")
    gen.set_defaults(run=_train_generator)


def _train_generator(args: argparse.Namespace) -> None:
    from .generator_training import GeneratorTrainConfig, train_generator

    train = GeneratorTrainConfig(seq_len=args.seq_len, crops=args.crops,
                                 train_positions=_int_list(args.train_positions, "--train-positions"))
    if args.lr is not None:
        train.lr = args.lr
    if args.warmup is not None:
        train.warmup_steps = args.warmup
    overrides = {}
    if args.window is not None:
        overrides["window"] = args.window or None
    train_generator(args.tokenizer, args.data, args.out, _run_config(args), train, preset=args.preset,
                    resume=args.resume, cache_dir=args.cache, cache_images=args.cache_images,
                    cache_width=args.cache_width, **overrides)


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EqgenError(f"{flag} takes comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except EqgenError as err:
        print(f"eqgen: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eqgen: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

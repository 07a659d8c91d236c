"""The `eqgen` command: one small function per command, each calling the library.

Every user mistake raises `EqgenError`; `main` prints it as one line on stderr and exits with status 2. Bad flag
values never get that far: their types (`cli_types`) refuse them, also in one line, while the command line is
parsed.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import errno
import os
import sys
from pathlib import Path

from .cli_types import (Parser, at_least_two, device, integer, nonnegative_float, nonnegative_int, output_dir, output_file,
                        pixel_column, png_file, positions, positive_float, positive_int, seed, unit_interval)
from .errors import EqgenError
from .flow import CFG_SCHEDULES, SOLVERS
from .sampling import PANORAMA, SamplingOptions
from .devices import PRECISIONS


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(prog="eqgen", description="Equivariant Image Modeling: column tokens, any width.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data(commands)
    _add_train(commands)
    _add_sample(commands)
    _add_panorama(commands)
    _add_app(commands)
    _add_convert(commands)
    _add_eval(commands)
    _add_analyze(commands)
    _add_report(commands)
    return parser


def _training_flags(parser: argparse.ArgumentParser, preset: str, presets: dict) -> None:
    """The core flags every training command shares."""
    parser.add_argument("--preset", default=preset, choices=list(presets),
                        help=f"model size preset (default: {preset})")
    parser.add_argument("--data", default="landscapes", help="'landscapes' (built in) or an image folder, one subfolder per class")
    parser.add_argument("--out", required=True, type=output_dir,
                        help="run directory: checkpoints, metrics.jsonl, the trained model")
    parser.add_argument("--steps", type=positive_int, default=5000,
                        help="optimizer steps in total (default: 5000; may be raised with --resume)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per step and process (default: 32)")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint, given the flags it was started with; "
                             "of those, --steps, --save-every, --lr, --warmup, --ema, --device, --precision (and "
                             "--betas, --decay-every) may change and apply from there on, any other change is refused")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="bf16 autocast or fp32; auto: bf16 on CUDA and on CPUs with AVX512-BF16/AMX (default)")
    parser.add_argument("--lr", type=positive_float, help="learning rate (default: the preset's; applies with --resume)")
    parser.add_argument("--warmup", type=nonnegative_int,
                        help="linear warm-up steps (default: the preset's; applies with --resume)")
    parser.add_argument("--save-every", type=positive_int, default=500,
                        help="checkpoint every N steps (default: 500; applies with --resume)")
    parser.add_argument("--ema", type=unit_interval, default=0.999,
                        help="EMA decay, in [0, 1) (default: 0.999; applies with --resume)")


def _run_config(args: argparse.Namespace):
    from .training import RunConfig

    return RunConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, ema_decay=args.ema,
                     save_every=args.save_every, device=args.device, precision=args.precision)


def _add_train(commands) -> None:
    from .generator import GENERATOR_PRESETS
    from .tokenizer import TOKENIZER_PRESETS

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
    from .configs import from_preset
    from .tokenizer_training import TOKENIZER_TRAIN_PRESETS, TokenizerTrainConfig, train_tokenizer

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
    train_tokenizer(args.data, args.out, _run_config(args), preset=args.preset, resume=args.resume, train=train,
                    grid_rows=args.grid_rows, noise_std=args.noise_std)


def _train_generator(args: argparse.Namespace) -> None:
    from .configs import from_dict
    from .generator_training import GENERATOR_TRAIN_PRESETS, GeneratorTrainConfig, train_generator

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
    train_generator(args.tokenizer, args.data, args.out, _run_config(args), train, preset=args.preset,
                    resume=args.resume, cache_dir=args.cache, cache_images=args.cache_images,
                    cache_width=args.cache_width, **overrides)


TOKEN_WIDTH = 8  # pixels per column token of eqgen's small tokenizers; `eqgen data` widths are multiples of it


def _add_data(commands) -> None:
    data = commands.add_parser("data", help="render the built-in landscapes (any width) / inspect a folder dataset")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")  # every `data` subcommand

    sub.add_parser("classes", help="list the landscape classes, one per line").set_defaults(run=_data_classes)

    def shape_flags(p: argparse.ArgumentParser, width: int) -> None:
        p.add_argument("--width", type=positive_int, default=width, help=f"pixels (default: {width})")
        p.add_argument("--height", type=positive_int, default=64, help="pixels (default: 64)")
        p.add_argument("--token-width", type=positive_int, default=TOKEN_WIDTH,
                       help=f"--width must be a multiple of it (default: {TOKEN_WIDTH})")
        p.add_argument("--seed", type=seed, default=0)
        p.add_argument("-o", "--out", required=True, type=png_file, help="output PNG")

    render = sub.add_parser("render", help="one landscape of any width",
                            description="Renders one landscape; --x0 shifts the window, so chunks tile seamlessly.")
    render.add_argument("--class", dest="cls", metavar="NAME", required=True, help="a class name (eqgen data classes)")
    render.add_argument("--x0", type=pixel_column, default=0, help="first pixel column (default: 0)")
    shape_flags(render, 1024)
    render.set_defaults(run=_data_render)

    grid = sub.add_parser("grid", help="a grid of landscapes: one row per class, one column per seed")
    grid.add_argument("--per-class", type=positive_int, default=8, help="images per class (default: 8)")
    grid.add_argument("--classes", help="comma-separated class names (default: all)")
    shape_flags(grid, 64)
    grid.set_defaults(run=_data_grid)

    inspect = sub.add_parser("inspect", help="check an image folder: classes, images per class, sizes, broken files",
                             description="Opens every file of FOLDER (one subfolder per class) and reports what "
                                         "training would use and what it would skip, and why.")
    inspect.add_argument("folder", metavar="FOLDER")
    inspect.add_argument("--list-file", help="read 'relative/path label' lines instead of class subfolders")
    inspect.set_defaults(run=_data_inspect)


def _data_classes(args: argparse.Namespace) -> None:
    from .data.landscapes import CLASSES

    print("\n".join(CLASSES))


def _check_width(args: argparse.Namespace) -> None:
    if args.width % args.token_width:
        raise EqgenError(f"--width must be a multiple of the token width {args.token_width}, got {args.width}")


def _data_render(args: argparse.Namespace) -> None:
    from .data.landscapes import render
    from .imageio import save_png

    _check_width(args)
    path = save_png(render(args.cls, args.width, args.height, args.seed, args.x0), args.out)
    print(f"wrote {path} ({args.width}x{args.height}, {args.cls}, seed {args.seed})")


def _data_grid(args: argparse.Namespace) -> None:
    from .data.landscapes import CLASSES, render_batch
    from .imageio import from_uint8, grid, save_png

    _check_width(args)
    classes = CLASSES if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]
    names = [c for c in classes for _ in range(args.per_class)]
    seeds = [args.seed + i for _ in classes for i in range(args.per_class)]
    images = render_batch(names, seeds, args.width, args.height)
    path = save_png(grid(from_uint8(images), args.per_class), args.out)
    print(f"wrote {path} ({len(classes)} classes x {args.per_class}, {args.width}x{args.height} each)")


def _data_inspect(args: argparse.Namespace) -> None:
    from .data.folders import describe, index_folder

    index = index_folder(args.folder, args.list_file)
    print(describe(index))
    index.require_images()


def _generation_flags(parser: argparse.ArgumentParser, defaults: SamplingOptions, output: bool = True) -> None:
    parser.add_argument("--model", default="builtin", help="a pipeline directory or Hub id (default: the built-in model)")
    _sampling_flags(parser, defaults)
    parser.add_argument("--cfg-schedule", default=defaults.cfg_schedule, choices=list(CFG_SCHEDULES),
                        help=f"guidance along the sequence (default: {defaults.cfg_schedule})")
    parser.add_argument("--temperature", type=nonnegative_float, default=defaults.temperature,
                        help=f"start-noise scale (default: {defaults.temperature})")
    parser.add_argument("--device", type=device, default="cpu", help="cpu or cuda (default: cpu)")
    if output:
        parser.add_argument("-o", "--output", required=True, type=png_file, help="PNG file to write")


def _sampling_flags(parser: argparse.ArgumentParser, defaults: SamplingOptions) -> None:
    """--seed, --cfg and the ODE solver's flags, with their defaults from `defaults`, which `_sampling` completes."""
    parser.set_defaults(sampling=defaults)
    parser.add_argument("--seed", type=seed, default=defaults.seed)
    parser.add_argument("--cfg", type=nonnegative_float, default=defaults.cfg,
                        help=f"classifier-free guidance scale (default: {defaults.cfg}; 1 = none)")
    parser.add_argument("--steps", type=positive_int, default=defaults.steps,
                        help=f"ODE steps per token (default: {defaults.steps}; the paper: 100 Euler steps)")
    parser.add_argument("--solver", default=defaults.solver, choices=list(SOLVERS),
                        help=f"ODE solver (default: {defaults.solver})")
    parser.add_argument("--rho", type=positive_float, default=defaults.rho,
                        help=f"time grid (k/steps)^rho; 1 = uniform, as officially (default: {defaults.rho})")


def _sampling(args: argparse.Namespace) -> SamplingOptions:
    """The sampling options the command's flags give; its defaults for the fields it has no flag for."""
    names = {f.name for f in dataclasses.fields(SamplingOptions)}
    return args.sampling.replace(**{name: value for name, value in vars(args).items() if name in names})


def _add_sample(commands) -> None:
    p = commands.add_parser("sample", help="a grid of class-conditional samples, or a sample set for evaluation",
                            description="-o FILE writes one grid. --out-dir DIR writes one PNG per image (DIR/<class>/"
                                        "<index>.png, each image from its own seed: the set does not depend on the "
                                        "batch size or the number of processes), skips images already there, and "
                                        "under torchrun shares the work between the ranks.")
    _generation_flags(p, SamplingOptions(), output=False)
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", type=png_file, help="the grid PNG to write")
    out.add_argument("--out-dir", type=output_dir, help="a folder for a sample set (eqgen eval fid reads it)")
    p.add_argument("--class", dest="classes", help="comma-separated class names (default: every class)")
    p.add_argument("-n", "--per-class", type=positive_int, default=8, help="images per class (default: 8)")
    p.add_argument("--width", type=positive_int, help="image width in pixels (default: the training width)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="--out-dir: images per batch and process (default: 32)")
    p.add_argument("--npz", action="store_true", help="--out-dir: also DIR/samples.npz (arr_0 images, arr_1 labels), "
                                                      "the ADM evaluator's format")
    p.set_defaults(run=_sample)


def _sample(args: argparse.Namespace) -> None:
    import torch

    from .imageio import save_grid
    from .pipeline import Pipeline

    if args.out_dir:
        return _sample_dir(args)
    pipe = Pipeline.from_pretrained(args.model, device=args.device)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes is not None else pipe.classes
    num_tokens = pipe.tokens_for_width(args.width) if args.width else None
    pipe.labels(classes)  # unknown names fail before any work
    rows = [pipe.generate([c] * args.per_class, num_tokens, options=_sampling(args), progress=True) for c in classes]
    print(save_grid(torch.cat(rows), args.output, nrow=args.per_class))


def _sample_dir(args: argparse.Namespace) -> None:
    from .evaluation.sample_dir import sample_to_dir

    classes = args.classes.split(",") if args.classes else None
    summary = sample_to_dir(args.model, args.out_dir, args.per_class, device=args.device, classes=classes,
                            batch_size=args.batch_size, width=args.width, npz=args.npz, options=_sampling(args))
    if summary:
        who = f"rank 0 of {summary['processes']}: " if summary["processes"] > 1 else ""
        print(f"{args.out_dir}: {summary['images']} images ({who}{summary['written']} new, "
              f"{summary['images_per_s']:.2f} images/s)" + (f"; {summary['npz']}" if args.npz else ""))


def _add_panorama(commands) -> None:
    p = commands.add_parser("panorama", help="one very wide image, any width, bounded memory")
    _generation_flags(p, PANORAMA)
    p.add_argument("--class", dest="cls", required=True, help="the class to generate")
    p.add_argument("--width", type=positive_int, default=2048, help="width in pixels (default: 2048)")
    p.add_argument("--left", help="an image to continue to the right (outpainting); its pixels are kept exactly. "
                                  "Another height is resized to the model's keeping the aspect, then the width "
                                  "is cropped on the right to a multiple of the token width")
    p.add_argument("--tile", type=positive_int, default=64, help="tokens per decoded tile (default: 64)")
    p.add_argument("--overlap", type=positive_int, default=8,
                   help="tokens of cross-faded overlap between tiles (default: 8)")
    p.set_defaults(run=_panorama)


def _panorama(args: argparse.Namespace) -> None:
    from .imageio import save_png
    from .pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, device=args.device)
    pipe.labels(args.cls)
    left = _fitted_left(args.left, pipe) if args.left else None
    pixels = pipe.panorama(args.cls, args.width, left=left, tile=args.tile, overlap=args.overlap,
                           options=_sampling(args))
    print(save_png(pixels, args.output))


def _fitted_left(path: str, pipe):
    """The --left image fitted to the model; one line on stderr says so when that changed it."""
    from .imageio import fit_image, from_uint8, load_image

    pixels = load_image(path)
    fitted = fit_image(pixels, pipe.height, pipe.token_width)
    if fitted.shape != pixels.shape:
        (h, w), (fh, fw) = pixels.shape[:2], fitted.shape[:2]
        how = "resized to the model's height keeping its aspect, " if h != fh else ""
        print(f"eqgen: {path} is {w}x{h} px; using {fw}x{fh} ({how}width cropped on the right to a multiple of "
              f"{pipe.token_width} px)", file=sys.stderr)
    return from_uint8(fitted)


def _add_app(commands) -> None:
    p = commands.add_parser("app", help="the interactive web page: grow an image column by column")
    _generation_flags(p, PANORAMA, output=False)  # seed, cfg, temperature: the page's defaults
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=integer(0, 65535, "a port from 0 to 65535"), default=7860,
                   help="port (default: 7860; 0 = any free port)")
    p.add_argument("--max-width", type=positive_int, default=4096,
                   help="the widest image a request may ask for, in px (default: 4096)")
    p.set_defaults(run=_app)


def _app(args: argparse.Namespace) -> None:
    from .app import serve
    from .pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, device=args.device)
    server = serve(pipe, args.host, args.port, max_width=args.max_width, options=_sampling(args))
    print(f"eqgen app on {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn stops cleanly on Ctrl-C, then passes the signal on
        pass


def _add_convert(commands) -> None:
    convert = commands.add_parser("convert", help="official checkpoints -> eqgen format")
    kinds = convert.add_subparsers(dest="kind", required=True, metavar="KIND")
    p = kinds.add_parser("official", help="the authors' tokenizer.ckpt / generator checkpoints",
                         description="Writes a tokenizer directory (--tokenizer alone), a generator directory "
                                     "(--generator alone) or, with both, a pipeline directory for --model.")
    p.add_argument("--tokenizer", help="the official tokenizer checkpoint (Lightning .ckpt; its EMA weights are used)")
    p.add_argument("--config", help="the official tokenizer YAML (default: the released configuration)")
    p.add_argument("--generator", help="the official generator checkpoint (its model_ema is used)")
    p.add_argument("--classes", help="a text file with one class name per line (default: class0, class1, ...)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of a checkpoint that tensors-only loading cannot read (only for "
                        "files from a source you trust)")
    p.add_argument("-o", "--out", required=True, type=output_dir, help="output directory")
    p.set_defaults(run=_convert)


def _convert(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .convert import load_official_generator, load_official_tokenizer
    from .pipeline import Pipeline

    if not (args.tokenizer or args.generator):
        raise EqgenError("give --tokenizer, --generator, or both")
    tokenizer = load_official_tokenizer(args.tokenizer, args.config, trust_pickle=args.trust_pickle) \
        if args.tokenizer else None
    generator = load_official_generator(args.generator) if args.generator else None
    if tokenizer is not None and generator is not None:
        n = generator.config.num_classes
        names = [f"class{i}" for i in range(n)]
        if args.classes:
            try:
                names = [line.strip() for line in Path(args.classes).read_text().splitlines() if line.strip()]
            except OSError as err:
                raise EqgenError(f"cannot read {args.classes}: {err.strerror}") from None
        Pipeline(tokenizer, generator, names).save_pretrained(args.out)
    else:
        (tokenizer or generator).save_pretrained(args.out)
    print(args.out)


def _add_eval(commands) -> None:
    evaluate = commands.add_parser("eval", help="measure a model")
    kinds = evaluate.add_subparsers(dest="kind", required=True, metavar="METRIC")
    p = kinds.add_parser("long", help="long-image fidelity: per-offset statistics of panoramas vs ground-truth renders",
                         description="Generates panoramas of --multiple × the training width and compares each "
                                     "training-width window with landscape renders of the class at that offset.")
    p.add_argument("--model", default="builtin")
    p.add_argument("--class", dest="cls", required=True)
    p.add_argument("--multiple", type=positive_int, default=32, help="panorama width in training widths (default: 32)")
    p.add_argument("-n", "--images", type=positive_int, default=4, help="panoramas to generate (default: 4)")
    _sampling_flags(p, PANORAMA)
    p.add_argument("--every", type=positive_int, default=4, help="print every k-th offset window (default: 4)")
    p.set_defaults(run=_eval_long)
    q = kinds.add_parser("samples", help="landscape-FID, IS-style score, precision/recall, class accuracy",
                         description="Scores samples of every class against fresh landscape renders with eqgen's "
                                     "own landscape classifier as the feature extractor (not Inception-FID).")
    q.add_argument("--model", default="builtin")
    q.add_argument("-n", "--per-class", type=at_least_two, default=16)
    _sampling_flags(q, SamplingOptions())
    q.add_argument("--inception", help="also Inception-FID: the TorchScript inception-2015-12-05.pt (a local file)")
    q.add_argument("--per-class-fid", action="store_true", help="also the landscape-FID of every class on its own")
    _classifier_flag(q)
    q.set_defaults(run=_eval_samples)
    t = kinds.add_parser("tokenizer", help="reconstruction PSNR and rFID of a tokenizer on fresh renders",
                         description="Encodes and decodes fresh landscape renders of every class; prints PSNR and "
                                     "the landscape-rFID (and Inception-rFID with --inception).")
    source = t.add_mutually_exclusive_group()
    source.add_argument("--tokenizer", help="a tokenizer directory (eqgen train tokenizer --out)")
    source.add_argument("--model", default="builtin", help="or the tokenizer of a model directory (default: built-in)")
    t.add_argument("-n", "--images", type=at_least_two, default=256, help="renders to reconstruct (default: 256)")
    t.add_argument("--tokens", type=at_least_two, default=16, help="render width in tokens (default: 16)")
    t.add_argument("--seed", type=seed, default=0)
    t.add_argument("--inception", help="also Inception-rFID: the TorchScript inception-2015-12-05.pt")
    t.add_argument("--png", type=png_file,
                   help="also write one fresh render per class here, each above its reconstruction")
    _classifier_flag(t)
    t.set_defaults(run=_eval_tokenizer)
    f = kinds.add_parser("fid", help="Inception-FID, IS, precision and recall of samples against a reference",
                         description="The ADM evaluator's protocol: FID on Inception pool features, IS in 10 parts, "
                                     "precision/recall (k=3) against 10,000 reference images. SAMPLES: a folder of "
                                     "images or an npz (arr_0). REFERENCE: a folder of real images (centre-cropped "
                                     "to the samples' size the way ADM prepares its reference), an npz with images "
                                     "(ADM's reference batch) or a statistics npz (mu, sigma). Under torchrun the "
                                     "features are computed across the ranks.")
    f.add_argument("samples", metavar="SAMPLES")
    f.add_argument("reference", metavar="REFERENCE")
    _feature_flags(f)
    f.set_defaults(run=_eval_fid)
    w = kinds.add_parser("long-fid", help="long images on any data: crop-FID and seam ratio per offset band",
                         description="Cuts every wide image of PANORAMAS (a folder or an npz, e.g. eqgen sample "
                                     "--out-dir --width 8W) into windows of --window px at increasing offsets and "
                                     "scores each band of offsets against REFERENCE (real images of the window's "
                                     "size, an npz, or statistics): crop-FID, seam and texture ratios.")
    w.add_argument("panoramas", metavar="PANORAMAS")
    w.add_argument("reference", metavar="REFERENCE")
    w.add_argument("--window", type=positive_int, help="window width in pixels, the training width (default: the images' height)")
    w.add_argument("--bands", type=positive_int, default=4, help="bands of consecutive offsets (default: 4)")
    _feature_flags(w)
    w.set_defaults(run=_eval_long_fid)
    c = kinds.add_parser("train-classifier", help="train the landscape classifier that the landscape scores use",
                         description="Trains eqgen's landscape classifier on fresh renders (the shipped one was "
                                     "made this way) and prints its held-out accuracy.")
    c.add_argument("--out", required=True, type=output_dir,
                   help="a directory for the classifier (config.json + safetensors)")
    c.add_argument("--steps", type=positive_int, default=1200)
    c.add_argument("--batch-size", type=at_least_two, default=64)
    c.add_argument("--seed", type=seed, default=0)
    c.set_defaults(run=_eval_train_classifier)


def _feature_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inception", required=True,
                        help="the TorchScript inception-2015-12-05.pt (a local file; python -m "
                             "eqgen.evaluation.stand_in FILE writes a random stand-in with its interface)")
    parser.add_argument("--save-stats", metavar="OUT.npz", type=output_file(".npz"),
                        help="also write the reference's statistics here: pass that file as REFERENCE next time")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per Inception batch (default: 64)")
    parser.add_argument("--workers", type=nonnegative_int, default=min(8, os.cpu_count() or 1),
                        help="processes decoding image files (default: min(8, CPUs))")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def _eval_fid(args: argparse.Namespace) -> None:
    from .evaluation.fid import evaluate_fid

    scores = evaluate_fid(args.samples, args.reference, args.inception, device=args.device, batch=args.batch_size,
                          workers=args.workers, save_stats=args.save_stats)
    if scores:
        _print_scores(scores)
        if args.save_stats:
            print(f"wrote {args.save_stats}")


def _eval_long_fid(args: argparse.Namespace) -> None:
    from .evaluation.fid import long_image_scores

    rows = long_image_scores(args.panoramas, args.reference, args.inception, window=args.window, bands=args.bands,
                             device=args.device, batch=args.batch_size, workers=args.workers,
                             save_stats=args.save_stats)
    if rows:
        print(f"{'band':>4} {'offsets px':>13} {'crops':>6} {'crop-FID':>9} {'seams':>6} {'texture':>8}")
        for r in rows:
            print(f"{r['band']:4d} {r['first_px']:6d}-{r['end_px']:<6d} {r['crops']:6d} {r['crop_fid']:9.3f} "
                  f"{r['seam_ratio']:6.2f} {r['texture_ratio']:8.2f}")
        first, last = rows[0], rows[-1]
        print(f"first vs last band: crop-FID {first['crop_fid']:.3f} -> {last['crop_fid']:.3f}, seam ratio "
              f"{first['seam_ratio']:.2f} -> {last['seam_ratio']:.2f}")
        if args.save_stats:
            print(f"wrote {args.save_stats}")


def _classifier_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classifier", metavar="DIR",
                        help="the landscape classifier for the landscape scores: a directory from eval "
                             "train-classifier (default: the shipped one)")


def _eval_long(args: argparse.Namespace) -> None:
    import numpy as np

    from .evaluation.long_images import drift_summary, drift_table, ground_truth, offset_stats
    from .pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model)
    cls = pipe.classes[int(pipe.labels(args.cls))]  # a name or an index: the renders need the name
    window = pipe.generator.config.train_tokens * pipe.token_width
    width = window * args.multiple
    truth = ground_truth(cls, max(args.images, 8), width, pipe.height)  # before the panoramas: fails fast
    options = _sampling(args)
    panoramas = np.stack([pipe.panorama(cls, width, progress=False, options=options, seed=options.seed + i)
                          for i in range(args.images)])
    rows = drift_table(offset_stats(panoramas, window), offset_stats(truth, window))
    print(f"{'offset px':>9} {'colour z':>9} {'texture':>8} {'seams':>6}")
    for row in rows[:: args.every] + ([rows[-1]] if (len(rows) - 1) % args.every else []):
        print(f"{row['offset']:9d} {row['colour_z']:9.2f} {row['texture_ratio']:8.2f} {row['seam_ratio']:6.2f}")
    summary = drift_summary(rows)
    print("first vs last quarter: " + ", ".join(f"{k} {a:.2f} -> {b:.2f}" for k, (a, b) in summary.items()))


def _eval_samples(args: argparse.Namespace) -> None:
    from .evaluation.scores import landscape_scores
    from .pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model)
    scores = landscape_scores(pipe, args.per_class, options=_sampling(args), inception=args.inception,
                              classifier=args.classifier)
    _print_scores(scores)
    if args.per_class_fid:
        from .evaluation.scores import class_fids

        print(f"\n{'class':<10} {'landscape-FID':>14} {'real vs real':>13}")
        for cls, (fid, floor) in class_fids(pipe, args.per_class, options=_sampling(args),
                                            classifier=args.classifier).items():
            print(f"{cls:<10} {fid:14.2f} {floor:13.2f}")


def _print_scores(scores: dict[str, float]) -> None:
    for name, value in scores.items():
        print(f"{name:28} {value:.3f}" if isinstance(value, float) else f"{name:28} {value}")


def _eval_train_classifier(args: argparse.Namespace) -> None:
    from .evaluation.classifier import train_classifier

    _, accuracy = train_classifier(args.out, args.steps, args.batch_size, args.seed)
    print(f"held-out accuracy {accuracy:.3f}; wrote {args.out}")


def _eval_tokenizer(args: argparse.Namespace) -> None:
    import torch

    from .data.landscapes import CLASSES, render_batch
    from .evaluation.scores import tokenizer_scores
    from .imageio import from_uint8, save_grid
    from .pipeline import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer or args.model)
    scores = tokenizer_scores(tokenizer, args.images, args.tokens, args.seed, inception=args.inception,
                              classifier=args.classifier)
    _print_scores(scores)
    if args.png:
        seeds = [4 * 10**6 + args.seed + i for i in range(len(CLASSES))]
        images = from_uint8(render_batch(range(len(CLASSES)), seeds, args.tokens * tokenizer.token_width,
                                         tokenizer.config.height))
        with torch.no_grad():
            recon = tokenizer.decode(tokenizer.encode(images)).clamp(-1, 1)
        pairs = torch.stack([x for pair in zip(images, recon) for x in pair])
        print(f"wrote {save_grid(pairs, args.png, nrow=1)}")


def _add_analyze(commands) -> None:
    analyze = commands.add_parser("analyze", help="the paper's analyses: per-position loss, FLOPs and parameters")
    kinds = analyze.add_subparsers(dest="kind", required=True, metavar="ANALYSIS")
    p = kinds.add_parser("positions", help="held-out flow loss per token position (paper Fig. 3)",
                         description="Teacher-forced flow-matching loss of every token position on fresh renders of "
                                     "every class, the same noise draws at every position; optional plot.")
    p.add_argument("--model", default="builtin")
    p.add_argument("--tokens", type=at_least_two, help="tokens per render (default: the training length)")
    p.add_argument("-n", "--per-class", type=at_least_two, default=8, help="held-out renders per class (default: 8)")
    p.add_argument("--draws", type=positive_int, default=8, help="noise draws per token (default: 8)")
    p.add_argument("--plot", type=png_file, help="write a PNG plot here")
    p.set_defaults(run=_analyze_positions)
    q = kinds.add_parser("costs", help="parameters and GFLOPs of the S/B/L/H presets next to the paper's Table 2")
    q.set_defaults(run=_analyze_costs)


def _analyze_positions(args: argparse.Namespace) -> None:
    from .evaluation.positions import held_out_tokens, position_losses
    from .pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model)
    tokens, labels = held_out_tokens(pipe, args.per_class, args.tokens or pipe.generator.config.train_tokens)
    loss, error = position_losses(pipe.generator, tokens, labels, draws=args.draws)
    print(f"{'position':>8} {'loss':>8} {'± se':>7}")
    for i, (m, e) in enumerate(zip(loss, error)):
        print(f"{i:8d} {m:8.4f} {e:7.4f}")
    print(f"positions 1..{len(loss) - 1}: mean {loss[1:].mean():.4f}, std/mean {loss[1:].std() / loss[1:].mean():.3f}")
    if args.plot:
        from .report import plot_positions

        plot_positions(args.plot, {args.model: (loss, error)}, "held-out flow loss per position")
        print(f"wrote {args.plot}")


def _analyze_costs(args: argparse.Namespace) -> None:
    from .evaluation.costs import preset_costs

    print(f"{'preset':<6} {'params':>9} {'paper':>6} {'transformer GFLOPs':>19} {'head GFLOPs/eval':>17} {'paper GFLOPs':>13}")
    for row in preset_costs():
        print(f"{row['preset']:<6} {row['params'] / 1e6:8.1f}M {row['paper_params']:>6} {row['transformer_gflops']:19.2f} "
              f"{row['head_gflops']:17.2f} {row['paper_gflops']:13.2f}")


def _add_report(commands) -> None:
    p = commands.add_parser("report", help="reproduce the paper's analysis at small scale and write the report",
                            description="Trains the demo generator in every experiment of the paper's analysis "
                                        "(zero-shot positions, window vs full vs real equivariant, 2-D grid baseline, "
                                        "RoPE shift), measures them and writes a markdown report with plots. "
                                        "About 45 minutes on a 2-core CPU; a rerun continues where it stopped.")
    p.add_argument("--out", default="runs/report", type=output_dir,
                   help="where runs and results.json go (default: runs/report)")
    p.add_argument("--doc", default="docs/reproduction.md", type=output_file(),
                   help="the report (default: docs/reproduction.md)")
    p.add_argument("--steps", type=positive_int, default=800, help="generator steps per experiment (default: 800)")
    p.add_argument("--tokenizer-steps", type=positive_int, default=300,
                   help="tokenizer fine-tuning steps (default: 300)")
    p.add_argument("--per-class", type=at_least_two, default=16, help="samples per class for the scores (default: 16)")
    p.add_argument("--cache-images", type=positive_int, default=1000, help="renders per token cache (default: 1000)")
    p.add_argument("--only", help="comma-separated experiment names (default: all)")
    p.add_argument("--seed", type=seed, default=0)
    p.set_defaults(run=_report)


def _report(args: argparse.Namespace) -> None:
    from .report import EXPERIMENTS, ReportConfig, run_experiments, write_report

    names = [n.strip() for n in args.only.split(",")] if args.only else list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise EqgenError(f"unknown experiment(s) {unknown}; choose from: {'; '.join(EXPERIMENTS)}")
    cfg = ReportConfig(steps=args.steps, tokenizer_steps=args.tokenizer_steps, per_class=args.per_class,
                       cache_images=args.cache_images, seed=args.seed, experiments=names)
    results = run_experiments(cfg, args.out)
    command = "eqgen report " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["report"] else "eqgen report"
    write_report(results, args.doc, command.strip())
    print(f"wrote {args.doc}")


# What the system refuses on the user's behalf: a full disk, a read-only mount, a file or directory the user
# named that is missing or not theirs to write. Other OSErrors keep their traceback: they are eqgen's bugs.
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                errno.ENAMETOOLONG, errno.ELOOP}


def _user_caused(err: OSError, args: argparse.Namespace) -> bool:
    if err.errno in _MACHINE_ERRNOS:
        return True
    if err.errno not in _PATH_ERRNOS or err.filename is None:
        return False
    failed = Path(os.fsdecode(err.filename)).absolute()
    given = [Path(value).absolute() for value in vars(args).values() if isinstance(value, str) and value]
    return any(failed == path or path in failed.parents for path in given)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a bad value: the parser has printed its one line
        return done.code
    try:
        args.run(args)
    except EqgenError as err:
        print(f"eqgen: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if not _user_caused(err, args):
            raise
        where = f": {os.fsdecode(err.filename)}" if err.filename is not None else ""
        print(f"eqgen: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    except MemoryError:
        print("eqgen: error: out of memory: ask for fewer or smaller images, or a smaller batch", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("eqgen: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

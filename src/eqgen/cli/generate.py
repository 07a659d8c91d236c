"""`eqgen sample`, `eqgen panorama` and `eqgen app`: the generation commands."""
from __future__ import annotations

import argparse
import sys

from ..sampling import PANORAMA, SamplingOptions
from .common import generation_flags, sampling_options
from .types import integer, output_dir, png_file, positive_int


def add_sample(commands) -> None:
    p = commands.add_parser("sample", help="a grid of class-conditional samples, or a sample set for evaluation",
                            description="-o FILE writes one grid. --out-dir DIR writes one PNG per image (DIR/<class>/"
                                        "<index>.png, each image from its own seed: the set does not depend on the "
                                        "batch size or the number of processes), skips images already there, and "
                                        "under torchrun shares the work between the ranks.")
    generation_flags(p, SamplingOptions(), output=False)
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

    from ..imageio import save_grid
    from ..pipeline import Pipeline

    if args.out_dir:
        return _sample_dir(args)
    pipe = Pipeline.from_pretrained(args.model, device=args.device)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes is not None else pipe.classes
    num_tokens = pipe.tokens_for_width(args.width) if args.width else None
    pipe.labels(classes)  # unknown names fail before any work
    rows = [pipe.generate([c] * args.per_class, num_tokens, options=sampling_options(args), progress=True) for c in classes]
    print(save_grid(torch.cat(rows), args.output, nrow=args.per_class))


def _sample_dir(args: argparse.Namespace) -> None:
    from ..evaluation.sample_dir import sample_to_dir

    classes = args.classes.split(",") if args.classes else None
    summary = sample_to_dir(args.model, args.out_dir, args.per_class, device=args.device, classes=classes,
                            batch_size=args.batch_size, width=args.width, npz=args.npz, options=sampling_options(args))
    if summary:
        who = f"rank 0 of {summary['processes']}: " if summary["processes"] > 1 else ""
        print(f"{args.out_dir}: {summary['images']} images ({who}{summary['written']} new, "
              f"{summary['images_per_s']:.2f} images/s)" + (f"; {summary['npz']}" if args.npz else ""))


def add_panorama(commands) -> None:
    p = commands.add_parser("panorama", help="one very wide image, any width, bounded memory")
    generation_flags(p, PANORAMA)
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
    from ..imageio import save_png
    from ..pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, device=args.device)
    pipe.labels(args.cls)
    left = _fitted_left(args.left, pipe) if args.left else None
    pixels = pipe.panorama(args.cls, args.width, left=left, tile=args.tile, overlap=args.overlap,
                           options=sampling_options(args))
    print(save_png(pixels, args.output))


def _fitted_left(path: str, pipe):
    """The --left image fitted to the model; one line on stderr says so when that changed it."""
    from ..imageio import fit_image, from_uint8, load_image

    pixels = load_image(path)
    fitted = fit_image(pixels, pipe.height, pipe.token_width)
    if fitted.shape != pixels.shape:
        (h, w), (fh, fw) = pixels.shape[:2], fitted.shape[:2]
        how = "resized to the model's height keeping its aspect, " if h != fh else ""
        print(f"eqgen: {path} is {w}x{h} px; using {fw}x{fh} ({how}width cropped on the right to a multiple of "
              f"{pipe.token_width} px)", file=sys.stderr)
    return from_uint8(fitted)


def add_app(commands) -> None:
    p = commands.add_parser("app", help="the interactive web page: grow an image column by column")
    generation_flags(p, PANORAMA, output=False)  # seed, cfg, temperature: the page's defaults
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=integer(0, 65535, "a port from 0 to 65535"), default=7860,
                   help="port (default: 7860; 0 = any free port)")
    p.add_argument("--max-width", type=positive_int, default=4096,
                   help="the widest image a request may ask for, in px (default: 4096)")
    p.set_defaults(run=_app)


def _app(args: argparse.Namespace) -> None:
    from ..app import serve
    from ..pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, device=args.device)
    server = serve(pipe, args.host, args.port, max_width=args.max_width, options=sampling_options(args))
    print(f"eqgen app on {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn stops cleanly on Ctrl-C, then passes the signal on
        pass

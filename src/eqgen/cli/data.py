"""`eqgen data`: render the built-in landscapes, inspect an image folder."""
from __future__ import annotations

import argparse

from ..errors import EqgenError
from .types import pixel_column, png_file, positive_int, seed


def _token_width() -> int:
    """Pixels per token of the demo tokenizer (the built-in model's): `eqgen data` widths are multiples of it."""
    from ..configs import from_preset
    from ..tokenizer import TOKENIZER_PRESETS, TokenizerConfig

    return from_preset(TokenizerConfig, TOKENIZER_PRESETS, "demo").token_width


def add_data(commands) -> None:
    data = commands.add_parser("data", help="render the built-in landscapes (any width) / inspect a folder dataset")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")  # every `data` subcommand

    sub.add_parser("classes", help="list the landscape classes, one per line").set_defaults(run=_data_classes)

    def shape_flags(p: argparse.ArgumentParser, width: int) -> None:
        p.add_argument("--width", type=positive_int, default=width, help=f"pixels (default: {width})")
        p.add_argument("--height", type=positive_int, default=64, help="pixels (default: 64)")
        p.add_argument("--token-width", type=positive_int, default=_token_width(),
                       help="--width must be a multiple of it (default: the demo tokenizer's, %(default)s)")
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
    from ..data.landscapes import CLASSES

    print("\n".join(CLASSES))


def _check_width(args: argparse.Namespace) -> None:
    if args.width % args.token_width:
        raise EqgenError(f"--width must be a multiple of the token width {args.token_width}, got {args.width}")


def _data_render(args: argparse.Namespace) -> None:
    from ..data.landscapes import render
    from ..imageio import save_png

    _check_width(args)
    path = save_png(render(args.cls, args.width, args.height, args.seed, args.x0), args.out)
    print(f"wrote {path} ({args.width}x{args.height}, {args.cls}, seed {args.seed})")


def _data_grid(args: argparse.Namespace) -> None:
    from ..data.landscapes import CLASSES, render_batch
    from ..imageio import from_uint8, grid, save_png

    _check_width(args)
    classes = CLASSES if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]
    names = [c for c in classes for _ in range(args.per_class)]
    seeds = [args.seed + i for _ in classes for i in range(args.per_class)]
    images = render_batch(names, seeds, args.width, args.height)
    path = save_png(grid(from_uint8(images), args.per_class), args.out)
    print(f"wrote {path} ({len(classes)} classes x {args.per_class}, {args.width}x{args.height} each)")


def _data_inspect(args: argparse.Namespace) -> None:
    from ..data.folders import describe, index_folder

    index = index_folder(args.folder, args.list_file)
    print(describe(index))
    index.require_images()

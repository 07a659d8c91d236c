"""`eqgen convert official`: the authors' checkpoints in eqgen's format."""
from __future__ import annotations

import argparse

from .types import output_dir


def add_convert(commands) -> None:
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
    from ..convert import convert_official

    convert_official(args.out, args.tokenizer, args.config, args.generator, args.classes, args.trust_pickle)
    print(args.out)

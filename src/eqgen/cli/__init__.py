"""The `eqgen` command: one module per command group, each handler parsing its flags and calling the library.

Every user mistake raises `EqgenError`; `main` prints it as one line on stderr and exits with status 2. Bad flag
values never get that far: their types (`cli.types`) refuse them, also in one line, while the command line is
parsed.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from ..errors import EqgenError
from .analyze import add_analyze, add_report
from .convert import add_convert
from .data import add_data
from .distill import add_distill
from .evaluate import add_eval
from .generate import add_app, add_panorama, add_sample
from .train import add_train
from .types import Parser


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog="eqgen", description="Equivariant Image Modeling: column tokens, any width.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data(commands)
    add_train(commands)
    add_sample(commands)
    add_panorama(commands)
    add_app(commands)
    add_convert(commands)
    add_eval(commands)
    add_distill(commands)
    add_analyze(commands)
    add_report(commands)
    return parser


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
    if hasattr(args, "threads"):   # the sampling commands (cli/common.sampling_flags)
        import torch

        from ..devices import sampling_threads

        torch.set_num_threads(sampling_threads(args.threads))
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

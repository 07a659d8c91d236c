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
    del commands  # commands are added below as they are built
    return parser


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

"""The kinds of value the `eqgen` command takes, each checked once, here, while the command line is parsed.

Every function is an argparse `type=`: it returns the value or raises `argparse.ArgumentTypeError`, which the
parser prints as one line (`eqgen sample: error: argument --cfg: must be a finite number ≥ 0, got 'nan'`)
before any model is loaded or any work starts. Checks that need two flags or the model (a width that must
be a multiple of the model's token width, a class name) stay with the library, which raises `EqgenError`.
"""
from __future__ import annotations

import argparse
import copy
import math
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import EqgenError

Invalid = argparse.ArgumentTypeError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default, unless the help already states it or there is none to show."""

    @staticmethod
    def _shows_default(action: argparse.Action) -> bool:
        meaningful = not any(action.default is x for x in (None, False, argparse.SUPPRESS))  # `is`: 0 == False
        return bool(action.option_strings) and meaningful and "default" not in (action.help or "")

    def _get_help_string(self, action: argparse.Action) -> str:
        return super()._get_help_string(action) if self._shows_default(action) else action.help

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self._shows_default(action):  # argparse prints no help line for these at all
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `PROG: error: MESSAGE` (exit status 2), without the
    usage block that would bury the message; `--help` shows the usage and every default. add_subparsers
    makes every command's parser of this class too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"formatter_class": HelpFormatter, **kwargs})

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


# The int32 range of image sizes and tensor indices: past it no image, batch or run fits in a machine, and
# numpy/torch would fail with overflow errors instead of a clear line.
INT_MAX = 2**31 - 1


def integer(low: int, high: int = INT_MAX, what: str | None = None) -> Callable[[str], int]:
    """A type for whole numbers from `low` to `high` (inclusive)."""
    what = what or f"an integer ≥ {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise Invalid(f"must be {what}, got {text!r}") from None
        if value < low:
            raise Invalid(f"must be {what}, got {text!r}")
        if value > high:
            raise Invalid(f"must be at most {high}, got {text!r}")
        return value

    return parse


def real(low: float = -math.inf, *, above: bool = False, below: float = math.inf,
         what: str) -> Callable[[str], float]:
    """A type for finite numbers ≥ `low` (> `low` when `above`) and < `below`. NaN and ±inf (also "1e400",
    which Python reads as inf) are never meaningful here: they would only reach the model as garbage."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise Invalid(f"must be {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (above and value == low) or value >= below:
            raise Invalid(f"must be {what}, got {text!r}")
        return value

    return parse


positive_int = integer(1, what="a positive integer")
nonnegative_int = integer(0)
at_least_two = integer(2)  # statistics over images (FID, standard errors) and token convolutions need two
threads = integer(1, 4096, "a number of threads from 1 to 4096")
seed = integer(0, 2**32 - 1, "an integer from 0 to 2**32 - 1")  # room for the offsets that make per-image seeds
pixel_column = integer(-2**40, 2**40, "an integer between -2**40 and 2**40")  # past it float64 blurs the columns
positive_float = real(0.0, above=True, what="a positive finite number")
nonnegative_float = real(0.0, what="a finite number ≥ 0")
unit_interval = real(0.0, below=1.0, what="a number in [0, 1)")
guidance_scale = real(1.0, what="a finite guidance scale ≥ 1")


def positions(text: str) -> list[int]:
    """Comma-separated token positions, e.g. 0,2,4,6 (their upper bound is the sequence length, checked by
    the training)."""
    items = text.split(",")
    if not all(item.strip().isdecimal() and item.strip().isascii() for item in items):
        raise Invalid(f"must be comma-separated integers ≥ 0, e.g. 0,2,4, got {text!r}")
    return [int(item) for item in items]


def device(text: str) -> str:
    """auto, cpu, cuda or cuda:N — refused here when this machine cannot run it. The same check as training's,
    so both say it the same way; the string is returned unchanged for the library to resolve."""
    from ..devices import resolve_device

    try:
        resolve_device(text)
    except EqgenError as err:
        raise Invalid(str(err)) from None
    return text


# -- paths the command will write ---------------------------------------------------------------------------


def output_dir(text: str) -> str:
    """A directory the command will write into: an existing or a new directory (created here), writable."""
    if not text:
        raise Invalid("must be a directory, got ''")
    _make_writable(Path(text))
    return text


def output_file(suffix: str | None = None) -> Callable[[str], str]:
    """A type for a file the command will write: in a writable directory (created here if new), not a
    directory itself, and ending in `suffix` (case-insensitive) when one is given."""

    def parse(text: str) -> str:
        path = Path(text)
        if suffix and path.suffix.lower() != suffix:
            raise Invalid(f"must be a file name ending in {suffix}, got {text!r}")
        if path.is_dir():
            raise Invalid(f"{text} is a directory, not a file")
        _make_writable(path.parent)
        return text

    return parse


png_file = output_file(".png")


def _make_writable(directory: Path) -> None:
    """Create the directory (the command is about to write there; every writer can then rely on it) and write
    a temporary file into it: the one test that also holds for root, read-only file systems and /proc."""
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise Invalid(f"{existing} is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise Invalid(f"cannot write in {directory}: {err.strerror or err}") from None

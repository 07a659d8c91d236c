"""Config dataclasses <-> plain values (as `files.load_json` reads them), and named presets.

Every model config is a plain dataclass. A module keeps its presets as a dict of names to overrides
(gpt-fast style) and builds configs with `from_preset`. The config is saved as `config.json` beside every
checkpoint, so a directory alone rebuilds its model. `from_dict` is the one place a config is built from
plain values: it checks every key and every value against the dataclass's annotations, so a hand-edited or
damaged `config.json` is refused in one line that names the file and the field.
"""
from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from typing import Any, NamedTuple, TypeVar

from .errors import EqgenError
from .files import key_path, show

T = TypeVar("T")


def from_preset(cls: type[T], presets: dict[str, dict[str, Any]], name: str, **overrides: Any) -> T:
    if name not in presets:
        raise EqgenError(f"unknown preset {name!r}; choose one of: {', '.join(presets)}")
    return from_dict(cls, {**presets[name], **overrides})


def from_dict(cls: type[T], values: Any, source: str | None = None, *, ignore_unknown: bool = False) -> T:
    """Build config dataclass `cls` from `values`, checking that it is a dict with no unknown keys and that
    each value has its field's annotated type (int, float, str, bool, lists and tuples of those, Optional,
    nested config dataclasses). Numbers are normalised (an integer where a float is annotated becomes a
    float; a list where a tuple is annotated becomes a tuple). `source` names where the values come from (a
    file); a `files.JsonObject` names its own file. `ignore_unknown` reads only the annotated fields of a foreign
    file (an official config), at every depth."""
    place = _Place(source or getattr(values, "file", None), getattr(values, "key", ""), ignore_unknown)
    return _build(cls, values, place)


class _Place(NamedTuple):
    """Where the values being checked are (the file, None if not from a file; the key path inside it), and
    whether keys that are not fields are ignored there."""

    file: str | None
    key: str
    ignore_unknown: bool

    def at(self, name: str) -> "_Place":
        return self._replace(key=key_path(self.key, name))

    def names(self, names: list[str]) -> str:
        return ", ".join(repr(key_path(self.key, n)) for n in names)

    @property
    def prefix(self) -> str:
        return f"{self.file}: " if self.file else ""


def _build(cls: type[T], values: Any, place: _Place) -> T:
    if not isinstance(values, dict):
        what = f"field {place.key!r}" if place.key else cls.__name__
        raise EqgenError(f"{place.prefix}{what} must be an object, got {show(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if place.ignore_unknown:
        values = {name: value for name, value in values.items() if name in fields}
    unknown = [name for name in values if name not in fields]
    if unknown:
        raise EqgenError(f"{place.prefix}{cls.__name__} has no field(s) {place.names(unknown)}")
    required = [name for name, f in fields.items() if name not in values
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        raise EqgenError(f"{place.file or cls.__name__} lacks {place.names(required)}")
    hints = typing.get_type_hints(cls)
    checked = {name: _check(value, hints[name], place.at(name)) for name, value in values.items()}
    try:
        return cls(**checked)
    except EqgenError as err:  # a __post_init__ check: the file and object it concerns come first
        if not place.file:
            raise
        raise EqgenError(f"{place.prefix}{place.key + ': ' if place.key else ''}{err}") from None


def _check(value: Any, hint: Any, place: _Place) -> Any:
    try:
        return _convert(value, hint, place)
    except _Mismatch:
        raise EqgenError(f"{place.prefix}field {place.key!r} must be {_describe(hint)}, got {show(value)}") from None


class _Mismatch(Exception):
    """A value that is not of its annotated type; `_check` turns it into one EqgenError for the whole field."""


def _convert(value: Any, hint: Any, place: _Place) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, place)
            except _Mismatch:
                pass
        raise _Mismatch
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else _build(hint, value, place)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:  # bool is an int to Python, never to a config
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    elif (origin or hint) in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[float, float]
            if len(value) != len(args):
                raise _Mismatch
            return tuple(_convert(v, a, place) for v, a in zip(value, args))
        items = [_convert(v, args[0] if args else Any, place) for v in value]
        return tuple(items) if (origin or hint) is tuple else items
    elif (origin or hint) is dict:
        ok = isinstance(value, dict)
    else:
        raise TypeError(f"from_dict cannot check values of type {hint}")  # a new annotation kind: teach _convert
    if not ok:
        raise _Mismatch
    return hint(value) if hint in (int, float) else value  # numpy and int scalars -> plain int / float for JSON


_WORDS = {bool: ("true or false", "true/false values"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("a string", "strings")}


def _describe(hint: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_describe(a, plural) for a in args if a is not type(None)]
        return " or ".join(options + (["null"] if type(None) in args else []))
    if hint in _WORDS:
        return _WORDS[hint][plural]
    if (origin or hint) in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            items = {_describe(a, True) for a in args}
            return f"a list of {len(args)} {items.pop()}" if len(items) == 1 else f"a list of {len(args)} values"
        return "lists" if plural else (f"a list of {_describe(args[0], True)}" if args else "a list")
    return "objects" if plural else "an object"


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)

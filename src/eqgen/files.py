"""Writing files atomically, and reading and writing JSON: the one place eqgen's files are put on disk.

Every file is written to a temporary name beside it and renamed into place, so a crash mid-write leaves the
previous file. Files that belong together (a checkpoint, a pipeline directory) are written by one
`commit_files` call: every file goes to a temporary first, then all are renamed in order, so the last one is
new only if all are — which makes the last one a commit record (see `checkpoint.py`).

JSON is written in one format (`json_bytes`), and read by `load_json` into `JsonObject`s, dicts that remember
their file and their key path inside it, so that a wrong value can be named where it stands.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import EqgenError

TEMPORARY = ".tmp"   # the suffix of a file being written; one left behind is a writer's that was killed


# -- atomic writes ------------------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_temporary(path: Path, data: bytes) -> Path:
    """`data` in a new, fsynced temporary file beside `path` (removed again if writing fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY)
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, 0o666 & ~_umask())   # mkstemp's 0600 would hide the file from everyone else
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _sync_directory(directory: Path) -> None:
    if os.name == "posix":   # a rename survives a power cut only once its directory is synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit_files(directory: str | Path, files: dict[str, bytes]) -> None:
    """Write `files` (name -> contents; a name may lie in a sub-folder, "generator/config.json") into
    `directory`: every one to a temporary file first, then all renamed into place in order. A crash leaves
    each file old or new, and the last one new only if all are."""
    directory = Path(directory)
    temporaries = []
    try:
        for name, data in files.items():
            target = directory / name
            temporaries.append((_write_temporary(target, data), target))
        for tmp, target in temporaries:
            os.replace(tmp, target)
    except OSError as err:   # name the file, not its temporary (a full disk names none)
        raise OSError(err.errno, err.strerror, str(target)) from err
    finally:
        for tmp, _ in temporaries:
            tmp.unlink(missing_ok=True)
    for folder in dict.fromkeys([target.parent for _, target in temporaries] + [directory]):  # sub-folders first
        _sync_directory(folder)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    commit_files(path.parent, {path.name: data})


def remove_temporaries(directory: str | Path) -> None:
    """Delete the temporary files that killed writers left in `directory` and in its sub-folders (a pipeline's
    components, a token cache)."""
    for pattern in (f".*{TEMPORARY}", f"*/.*{TEMPORARY}"):
        for tmp in Path(directory).glob(pattern):
            tmp.unlink(missing_ok=True)


# -- JSON ---------------------------------------------------------------------------------------------------


def json_bytes(values: dict[str, Any], sort_keys: bool = True) -> bytes:
    """The one JSON format eqgen writes: indented, keys sorted unless their order means something."""
    return (json.dumps(values, indent=2, sort_keys=sort_keys) + "\n").encode()


def save_json(path: str | Path, values: dict[str, Any], sort_keys: bool = True) -> None:
    atomic_write_bytes(path, json_bytes(values, sort_keys))


class JsonObject(dict):
    """An object read from a JSON (or YAML) file: a dict that remembers its file and its key path inside the
    file (`generator` for the `generator` object of a pipeline's config.json), so that `configs.from_dict` can
    say where a wrong value is. It is a plain dict in every other way."""

    def __init__(self, values: dict[str, Any], file: str, key: str = ""):
        super().__init__(values)
        self.file, self.key = file, key


def key_path(key: str, name: str) -> str:
    """The path of `name` inside the object at `key` ("generator" + "depth" -> "generator.depth")."""
    return f"{key}.{name}" if key else name


def located(value: Any, file: str | Path, key: str = "") -> Any:
    """Values read from `file` (at `key` inside it), with every object turned into a `JsonObject`."""
    if isinstance(value, dict):
        return JsonObject({k: located(v, file, key_path(key, str(k))) for k, v in value.items()}, str(file), key)
    if isinstance(value, list):
        return [located(v, file, key) for v in value]
    return value


def load_json(path: str | Path) -> JsonObject:
    """A JSON object from a file, as a `JsonObject` (nested objects too); anything else is refused in one line
    that names the file (and the line and column of a syntax error)."""
    path = Path(path)
    try:
        values = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise EqgenError(f"{path} not found") from None
    except IsADirectoryError:
        raise EqgenError(f"{path} is a folder, not a JSON file") from None
    except OSError as err:
        raise EqgenError(f"cannot read {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise EqgenError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except UnicodeDecodeError:
        raise EqgenError(f"{path} is not valid JSON: it is not UTF-8 text") from None
    if not isinstance(values, dict):
        raise EqgenError(f"{path} must hold a JSON object ({{...}}), got {show(values, 30)}")
    return located(values, path)


def show(value: Any, limit: int = 60) -> str:
    """A value as the user wrote it in JSON (`"two"`, `null`, `[1, 2]`), shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"

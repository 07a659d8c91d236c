"""Every bad command-line value is refused with one line on stderr and exit status 2, before any work starts.

The table below names, for every command, every flag that takes a value with a valid range, and the values
that must be refused. A second test walks the parser so that a new flag cannot be added without a row here.
"""
import argparse
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eqgen
from eqgen.cli import _user_caused, build_parser, main

HUGE = [str(2**31), str(10**30)]  # counts and sizes stop at 2**31 - 1: past it nothing fits, numpy overflows
POSITIVE_INT = ["0", "-1", "1.5", "nan", "inf", "1e400", "x", "", *HUGE]
NONNEGATIVE_INT = ["-1", "1.5", "nan", "inf", "x", "", *HUGE]
AT_LEAST_TWO = ["1", "0", "-1", "2.5", "nan", "x", *HUGE]
SEED = ["-1", str(2**32), str(10**30), "1.5", "nan", "x"]
POSITIVE_FLOAT = ["0", "-1", "nan", "inf", "-inf", "1e400", "x", ""]
NONNEGATIVE_FLOAT = ["-1", "-1e-9", "nan", "inf", "1e400", "x"]
UNIT_INTERVAL = ["1", "1.5", "-0.1", "nan", "inf", "x"]
PIXEL_COLUMN = [str(2**41), str(-2**41), "1.5", "nan", "x"]
POSITIONS = ["", "a", "1,,2", "-1", "1.5", "²"]
DEVICE = ["gpu", "cuda:x", ""] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
# {tmp}: a scratch directory; {file}: a regular file in it; {tmp}/d.png: a directory.
OUT_DIR = ["{file}", "{file}/sub", "/proc/eqgen", "/proc", ""]
PNG = ["{file}/x.png", "noext", "x.jpg", "{tmp}/d.png", "/proc/x.png", "/proc/eqgen/x.png", ""]
DOC = ["{file}/report.md", "{tmp}/d.png", "/proc/report.md", ""]
BETAS = [("0.5", "1.0"), ("nan", "0.9"), ("0.5", "-0.1"), ("inf", "0.9"), ("0.5",)]

MISSING = "/nonexistent/eqgen-model"
TRAINING = {"--out": OUT_DIR, "--steps": POSITIVE_INT, "--batch-size": POSITIVE_INT, "--seed": SEED,
            "--device": DEVICE, "--lr": POSITIVE_FLOAT, "--warmup": NONNEGATIVE_INT, "--save-every": POSITIVE_INT,
            "--ema": UNIT_INTERVAL}
THREADS = ["0", "-1", "4097", "1.5", "x", ""]
SOLVER = {"--steps": POSITIVE_INT, "--rho": POSITIVE_FLOAT, "--threads": THREADS}
GENERATION = {**SOLVER, "--seed": SEED, "--cfg": NONNEGATIVE_FLOAT, "--temperature": NONNEGATIVE_FLOAT,
              "--device": DEVICE, "--output": PNG}
NPZ = ["{file}/s.npz", "stats", "s.png", "{tmp}/d.png", "/proc/s.npz", ""]
FEATURES = {"--save-stats": NPZ, "--batch-size": POSITIVE_INT, "--workers": NONNEGATIVE_INT, "--device": DEVICE}
SHAPE = {"--width": POSITIVE_INT, "--height": POSITIVE_INT, "--token-width": POSITIVE_INT, "--seed": SEED, "--out": PNG}

# command: (arguments that make the rest valid yet fail fast if a bad value were ever accepted, {flag: bad values})
COMMANDS = {
    "train tokenizer": (["--out", "{tmp}/run", "--data", MISSING],
                        {**TRAINING, "--width": POSITIVE_INT, "--betas": BETAS, "--decay-every": NONNEGATIVE_INT,
                         "--adversarial-start": NONNEGATIVE_INT, "--noise-std": NONNEGATIVE_FLOAT,
                         "--grid-rows": POSITIVE_INT}),
    "train generator": (["--out", "{tmp}/run", "--tokenizer", MISSING],
                        {**TRAINING, "--cache": OUT_DIR, "--cache-images": POSITIVE_INT, "--cache-width": POSITIVE_INT,
                         "--seq-len": POSITIVE_INT, "--window": NONNEGATIVE_INT, "--train-positions": POSITIONS,
                         "--rope-shift": POSITIVE_INT}),
    "sample": (["-o", "{tmp}/x.png", "--model", MISSING],
               {**GENERATION, "--per-class": POSITIVE_INT, "--width": POSITIVE_INT, "--batch-size": POSITIVE_INT,
                "--out-dir": OUT_DIR}),
    "panorama": (["--class", "alpine", "-o", "{tmp}/x.png", "--model", MISSING],
                 {**GENERATION, "--width": POSITIVE_INT, "--tile": POSITIVE_INT, "--overlap": POSITIVE_INT}),
    "data render": (["--class", "no-such-class", "-o", "{tmp}/x.png"], {**SHAPE, "--x0": PIXEL_COLUMN}),
    "data grid": (["--classes", "no-such-class", "-o", "{tmp}/x.png"], {**SHAPE, "--per-class": POSITIVE_INT}),
    "data classes": ([], {}),
    "data inspect": ([MISSING], {}),
    "convert official": (["-o", "{tmp}/converted"], {"--out": OUT_DIR}),
    "distill head": (["--out", "{tmp}/run", "--model", MISSING],
                     {**TRAINING, "--evals": POSITIVE_INT, "--cfg-max": [*POSITIVE_FLOAT, "0.99"],
                      "--images-per-class": POSITIVE_INT, "--tokens": POSITIVE_INT, "--draws": POSITIVE_INT,
                      "--data-images": POSITIVE_INT,
                      "--teacher-steps": POSITIVE_INT}),
    "eval long": (["--class", "alpine", "--model", MISSING],
                  {**SOLVER, "--multiple": POSITIVE_INT, "--images": POSITIVE_INT, "--cfg": NONNEGATIVE_FLOAT,
                   "--seed": SEED, "--every": POSITIVE_INT}),
    "eval samples": (["--model", MISSING], {**SOLVER, "--per-class": AT_LEAST_TWO, "--cfg": NONNEGATIVE_FLOAT,
                                            "--seed": SEED}),
    "eval tokenizer": (["--model", MISSING], {"--images": AT_LEAST_TWO, "--tokens": AT_LEAST_TWO, "--seed": SEED,
                                              "--png": PNG}),
    "eval fid": ([MISSING, MISSING, "--inception", MISSING], FEATURES),
    "eval long-fid": ([MISSING, MISSING, "--inception", MISSING],
                      {**FEATURES, "--window": POSITIVE_INT, "--bands": POSITIVE_INT}),
    "eval train-classifier": (["--out", "{tmp}/classifier", "--steps", "1", "--batch-size", "2"],
                              {"--out": OUT_DIR, "--steps": POSITIVE_INT, "--batch-size": AT_LEAST_TWO,
                               "--seed": SEED}),
    "analyze positions": (["--model", MISSING], {"--tokens": AT_LEAST_TWO, "--per-class": AT_LEAST_TWO,
                                                 "--draws": POSITIVE_INT, "--plot": PNG}),
    "analyze costs": ([], {}),
    "app": (["--model", MISSING], {**{k: v for k, v in GENERATION.items() if k != "--output"},
                                   "--port": ["-1", "65536", "99999", "1.5", "nan", "x"], "--max-width": POSITIVE_INT}),
    "report": (["--out", "{tmp}/report", "--doc", "{tmp}/report.md", "--only", "no-such-experiment"],
               {"--out": OUT_DIR, "--doc": DOC, "--steps": POSITIVE_INT, "--tokenizer-steps": POSITIVE_INT,
                "--per-class": AT_LEAST_TWO, "--cache-images": POSITIVE_INT, "--seed": SEED}),
}

CASES = [(command, flag, value if isinstance(value, tuple) else (value,))
         for command, (_, flags) in COMMANDS.items() for flag, values in flags.items() for value in values]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("values")
    (tmp / "afile").write_text("")
    (tmp / "d.png").mkdir()
    return tmp


def _fill(text: str, tmp: Path) -> str:
    return text.replace("{file}", str(tmp / "afile")).replace("{tmp}", str(tmp))


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command,flag,value", CASES, ids=[f"{c}:{f}={'_'.join(v)}" for c, f, v in CASES])
def test_a_bad_value_is_one_line_and_exit_2(scratch, capsys, command, flag, value):
    base, _ = COMMANDS[command]
    code = main([*command.split(), *(_fill(a, scratch) for a in base), flag, *(_fill(v, scratch) for v in value)])
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert code == 2 and captured.out == ""
    assert line.startswith(f"eqgen {command}: error: argument ") and flag in line.split(":")[2]


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        yield " ".join(path), parser
    for action in subcommands:
        for name, sub in action.choices.items():
            yield from _leaf_parsers(sub, path + (name,))


def test_the_table_covers_every_flag_that_takes_a_checked_value():
    for command, parser in _leaf_parsers(build_parser()):
        typed = {max(a.option_strings, key=len) for a in parser._actions if a.type is not None and a.option_strings}
        raw = [a.dest for a in parser._actions if a.type in (int, float)]
        assert typed == set(COMMANDS[command][1]), command
        assert not raw, f"{command}: {raw} take unchecked numbers"


def test_boundary_values_and_defaults_are_still_accepted(scratch):
    parse = build_parser().parse_args
    run = parse(["train", "generator", "--tokenizer", "t", "--out", str(scratch / "run"), "--window", "0",
                 "--warmup", "0", "--ema", "0", "--train-positions", "0,2", "--seed", str(2**32 - 1),
                 "--lr", "1e-30"])
    assert (run.window, run.warmup, run.ema, run.train_positions, run.lr) == (0, 0, 0.0, [0, 2], 1e-30)
    assert (run.steps, run.batch_size, run.save_every, run.device) == (5000, 32, 500, "auto")
    sample = parse(["sample", "-o", str(scratch / "y.PNG"), "--cfg", "0", "--temperature", "0"])
    assert (sample.cfg, sample.temperature, sample.steps, sample.rho, sample.per_class) == (0.0, 0.0, 10, 1.5, 8)
    assert parse(["data", "render", "--class", "a", "--x0", "-64", "-o", str(scratch / "z.png")]).x0 == -64
    assert parse(["eval", "samples", "-n", "2"]).per_class == 2


def test_a_new_output_directory_is_made_and_valid_values_still_run(scratch, capsys):
    out = scratch / "new" / "deeper" / "x.png"
    assert main(["data", "render", "--class", "alpine", "--width", "64", "-o", str(out)]) == 0
    assert Image.open(out).size == (64, 64)
    by_name, by_index = scratch / "alpine.png", scratch / "one.png"
    assert main(["sample", "--class", "alpine", "-n", "1", "--steps", "2", "--seed", "3", "-o", str(by_name)]) == 0
    assert main(["sample", "--class", "1", "-n", "1", "--steps", "2", "--seed", "3", "-o", str(by_index)]) == 0
    assert np.array_equal(np.asarray(Image.open(by_name)), np.asarray(Image.open(by_index)))  # class 1 is alpine
    assert np.asarray(Image.open(by_name)).std() > 5                                     # an image, not a blank
    assert capsys.readouterr().err.count("error") == 0


@pytest.mark.parametrize("command", [["sample", "-n", "1"], ["panorama", "--width", "64"],
                                     ["eval", "long", "-n", "1", "--multiple", "1"]])
@pytest.mark.parametrize("names", ["²", "", "alpine,,coast", "日本", "-1", "Alpine"])
def test_any_class_name_is_one_line_naming_the_classes(scratch, capsys, command, names):
    out = [] if command[0] == "eval" else ["-o", str(scratch / "never.png")]
    assert main([*command, "--class", names, "--steps", "1", *out]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("eqgen: error: unknown class") and "this model knows: desert, alpine," in line
    assert not (scratch / "never.png").exists()


def test_a_class_index_outside_the_model_is_one_line(scratch, capsys):
    assert main(["sample", "--class", "9", "-o", str(scratch / "never.png")]) == 2
    assert "class index 9 outside 0..7" in _one_error_line(capsys.readouterr().err)


def test_a_full_disk_during_the_work_is_one_line(tmp_path, capsys):
    from conftest import make_tiny_pipeline

    make_tiny_pipeline().save_pretrained(tmp_path / "model")
    plot = tmp_path / "plot.png"
    plot.symlink_to("/dev/full")  # every write there fails with ENOSPC
    assert main(["analyze", "positions", "--model", str(tmp_path / "model"), "-n", "2", "--tokens", "3",
                 "--draws", "1", "--plot", str(plot)]) == 1
    assert _one_error_line(capsys.readouterr().err).startswith("eqgen: error: No space left on device")


def test_only_oserrors_on_the_users_paths_or_the_machine_are_the_users(tmp_path):
    args = argparse.Namespace(out=str(tmp_path / "run"), device="cpu", steps=3)
    assert _user_caused(OSError(errno.EACCES, "Permission denied", str(tmp_path / "run" / "ckpt.pt")), args)
    assert _user_caused(OSError(errno.ENOSPC, "No space left on device"), args)
    # eqgen's own files missing, or an OSError with no file: a bug, which keeps its traceback
    assert not _user_caused(OSError(errno.ENOENT, "No such file", str(Path(eqgen.__file__).parent / "x")), args)
    assert not _user_caused(OSError(errno.EBADF, "Bad file descriptor", str(tmp_path / "run")), args)
    assert not _user_caused(OSError(errno.ENOENT, "No such file"), args)


def _eqgen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed `eqgen` script (else `python -m eqgen.cli`), running this checkout's code."""
    script = shutil.which("eqgen")
    command = [script] if script else [sys.executable, "-m", "eqgen.cli"]
    src = str(Path(eqgen.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,message", [
    (["data", "render", "--class", "alpine", "-o", "afile/x.png"], "argument -o/--out: afile is not a directory"),
    (["sample", "-o", "noext"], "argument -o/--output: must be a file name ending in .png, got 'noext'"),
    (["train", "tokenizer", "--out", "/proc/eqgen"], "argument --out: cannot write in /proc/eqgen"),
    pytest.param(["sample", "--device", "cuda", "-o", "x.png"], "argument --device: --device cuda was asked for",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_the_eqgen_command_refuses_with_one_line(tmp_path, args, message):
    (tmp_path / "afile").write_text("")
    done = _eqgen(*args, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert message in _one_error_line(done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing written


def test_sampling_threads_come_from_the_flag_then_omp_num_threads_then_one(monkeypatch):
    from eqgen.devices import sampling_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert sampling_threads() == 1 and sampling_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert sampling_threads() == 2 and sampling_threads(1) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert sampling_threads() == 1

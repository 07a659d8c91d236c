"""`eqgen train` survives what happens to real runs: kill -9 at any moment (the first save included), a full
disk, resuming with other flags, foreign files in the run directory. Every kill is resumed to the end and must
give the uninterrupted run's weights, bit for bit."""
import json
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import eqgen
from eqgen.checkpoint import holds_checkpoint, load_training_state, weights_step
from eqgen.cli import main

TINY = ["train", "tokenizer", "--preset", "tiny", "--batch-size", "2", "--device", "cpu", "--precision", "fp32"]


def _err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("eqgen: error:")]


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tok"
    assert main(TINY + ["--out", str(out), "--steps", "2", "--lr", "0.01"]) == 0
    return out


def test_lr_and_warmup_given_with_resume_apply(two_steps, tmp_path, capsys):
    out = tmp_path / "tok"
    shutil.copytree(two_steps, out)
    assert main(TINY + ["--out", str(out), "--steps", "3", "--lr", "0.001", "--warmup", "1", "--resume"]) == 0
    assert "lr 0.01 -> 0.001, warmup_steps 5 -> 1" in capsys.readouterr().err
    state = load_training_state(out)
    assert state["schedulers"]["model"]["base_lrs"] == [0.001]
    assert state["optimizers"]["model"]["param_groups"][0]["lr"] == pytest.approx(0.001)   # warmed up: ×1


def test_a_run_that_lost_its_config_resumes(two_steps, tmp_path):
    """Runs of earlier versions wrote config.json after the training state: a kill between lost it."""
    out = tmp_path / "tok"
    shutil.copytree(two_steps, out)
    (out / "config.json").unlink()
    assert main(TINY + ["--out", str(out), "--steps", "3", "--lr", "0.01", "--resume"]) == 0
    assert json.loads((out / "config.json").read_text())["ch"] == 8 and weights_step(out / "model.safetensors") == 3


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "4"], "batch_size 4 (the run's: 2)"),
    (["--seed", "3"], "seed 3 (the run's: 0)"),
    (["--preset", "demo"], "differs from the one asked for"),
    (["--noise-std", "0.5"], "noise_std 0.5 (the run's: 2.5)"),
])
def test_resume_refuses_flags_it_cannot_apply(two_steps, capsys, flags, message):
    # The flags come after TINY's: the last of a repeated flag counts.
    assert main(TINY + ["--out", str(two_steps), "--steps", "3", "--lr", "0.01", "--resume"] + flags) == 2
    errors = _err_lines(capsys)
    assert len(errors) == 1 and message in errors[0], errors
    assert load_training_state(two_steps)["step"] == 2


def test_ema_outside_zero_one_is_refused_before_training(tmp_path, capsys):
    for ema in ("1", "nan", "2"):   # the parser refuses it; RunConfig does too, for every other caller
        assert main(TINY + ["--out", str(tmp_path / "r"), "--steps", "1", "--ema", ema]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "--ema: must be a number in [0, 1)" in err, err
    assert not holds_checkpoint(tmp_path / "r")


def test_foreign_files_in_a_run_directory_are_one_line(two_steps, tmp_path, capsys):
    out = tmp_path / "tok"
    resume = TINY + ["--out", str(out), "--steps", "3", "--lr", "0.01", "--resume"]
    state = load_training_state(two_steps)
    for name, contents, message in [
            ("training_state.pt", {}, "is not an eqgen training state"),
            ("training_state.pt", {**state, "kind": "generator"}, "is the training state of a generator, not of a tokenizer"),
            ("config.json", {"ch": "eight"}, "config.json: field 'ch' must be an integer")]:
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(two_steps, out)
        if name == "config.json":
            config = json.loads((out / name).read_text())
            (out / name).write_text(json.dumps({**config, **contents}))
        else:
            torch.save(contents, out / name)
        assert main(resume) == 2
        errors = _err_lines(capsys)
        assert len(errors) == 1 and message in errors[0], errors


# ---------------------------------------------------------------------------------------------------------
# Real processes, killed with SIGKILL. Each is a fork of one process that imported torch and eqgen already
# (those imports take seconds here); the child runs `eqgen.cli.main` with its argv, as `eqgen` would.

ZYGOTE = r"""
import json, os, sys, traceback
import torch, torch._dynamo   # what every run imports, once
from eqgen.cli import main
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log, 1)
        os.dup2(log, 2)
        try:
            code = main(request["argv"])
        except BaseException:
            traceback.print_exc()
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""

STEPS = 10
CHECKPOINT_FILES = ("model.safetensors", "config.json", "training_state.pt")


class Runner:
    """Starts `eqgen` runs as forks of a warm process; reports their exit codes (-9 when killed)."""

    def __init__(self, logs: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(Path(eqgen.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        env=env)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)
        self.buffer, self.logs, self.count = b"", logs, 0

    def start(self, argv: list[str]) -> tuple[int, Path]:
        self.count += 1
        log = self.logs / f"run_{self.count:03d}.log"
        self.process.stdin.write((json.dumps({"argv": argv, "log": str(log)}) + "\n").encode())
        self.process.stdin.flush()
        return int(self._line(120)), log

    def exit_code(self, timeout: float) -> int | None:
        """The exit code of the running child, or None if it still runs after `timeout` seconds."""
        line = self._line(timeout)
        return None if line is None else int(line)

    def _line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left < 0 or not self.selector.select(left):
                return None
            chunk = os.read(self.process.stdout.fileno(), 4096)
            assert chunk, "the zygote died"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def close(self):
        self.process.stdin.close()
        self.process.wait(30)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    runner = Runner(tmp_path_factory.mktemp("logs"))
    yield runner
    runner.close()


def _argv(out: Path) -> list[str]:
    """The same command each time; --resume once the directory holds a checkpoint (a user's rule too)."""
    return TINY + ["--out", str(out), "--steps", str(STEPS), "--save-every", "1"] + \
        (["--resume"] if holds_checkpoint(out) else [])


@pytest.fixture(scope="module")
def reference(runner, tmp_path_factory):
    """An uninterrupted run, and how long it took."""
    out = tmp_path_factory.mktemp("ref") / "run"
    runner.start(_argv(out))
    started = time.monotonic()   # after the start: the first one waits for the imports
    assert runner.exit_code(300) == 0
    return out, time.monotonic() - started


def _assert_same_as(reference: Path, out: Path):
    a, b = load_training_state(reference), load_training_state(out)
    assert a["step"] == b["step"] == STEPS
    for part in ("modules", "ema"):
        x, y = (a[part]["model"], b[part]["model"]) if part == "modules" else (a[part], b[part])
        assert all(torch.equal(x[k], y[k]) for k in x), part
    assert (reference / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert json.loads((reference / "config.json").read_text()) == json.loads((out / "config.json").read_text())
    losses = [[(r["step"], r.get("loss"), r.get("eval_psnr")) for r in map(json.loads, (d / "metrics.jsonl").open())]
              for d in (reference, out)]
    assert losses[0] == losses[1]


def _checkpoint_temporaries(out: Path) -> list[Path]:
    return [p for p in out.glob(".*.tmp") if p.name.startswith(tuple(f".{name}." for name in CHECKPOINT_FILES))]


def _hit_a_save(out: Path) -> bool:
    """Whether the directory shows a checkpoint half written: temporary files, or exported weights without
    (or of another step than) the training state."""
    if _checkpoint_temporaries(out):
        return True
    exported = weights_step(out / "model.safetensors")
    return exported is not None and exported != (load_training_state(out)["step"] if holds_checkpoint(out) else None)


def _complete(out: Path) -> bool:
    return holds_checkpoint(out) and load_training_state(out)["step"] == STEPS


def _exported_step(out: Path) -> int:
    return weights_step(out / "model.safetensors") or 0


def _kill(runner: Runner, out: Path, mode: str, span: float, rng: random.Random) -> tuple[int | None, Path]:
    """Start the run in `out` and kill -9 it. "random": once it has exported a random step between the one it
    starts from and the last but one, after a random part of one step's time. "save": right as it starts
    writing a checkpoint file, plus up to 4 ms. `span`: the uninterrupted run's time. Returns the exit code if
    the run ended by itself first (else None), and its log."""
    stale = set(_checkpoint_temporaries(out))   # left by the previous kill; this run removes them
    target = rng.randint(_exported_step(out), STEPS - 2)
    pid, log = runner.start(_argv(out))
    started, code = time.monotonic(), None
    if mode == "random":
        while code is None and _exported_step(out) < target and time.monotonic() - started < span:
            code = runner.exit_code(0.002)
        wait = rng.uniform(0, span / STEPS)
    else:
        while code is None and not set(_checkpoint_temporaries(out)) - stale and time.monotonic() - started < span:
            code = runner.exit_code(0.0005)
        wait = rng.uniform(0, 0.004)
    if code is None:
        code = runner.exit_code(wait)
    if code is None:
        os.kill(pid, signal.SIGKILL)
        assert runner.exit_code(60) == -signal.SIGKILL
    return code, log


@pytest.mark.slow
@pytest.mark.parametrize("chain", range(4))
def test_kill_9_at_random_moments_then_resume_equals_uninterrupted(runner, reference, tmp_path, chain):
    """Up to seven kills -9 per chain, the first as the directory's very first checkpoint is written, then
    alternately at a random moment and as a checkpoint is written; each next run resumes (or, with no checkpoint
    yet, starts afresh), and the chain's last run goes to the end."""
    reference_dir, span = reference
    rng = random.Random(chain)
    out = tmp_path / "run"
    counts = {"kills": 0, "in a save": 0, "between renames": 0, "in the first save": 0, "ended first": 0}
    while counts["kills"] < 7 and not _complete(out):
        code, log = _kill(runner, out, "random" if counts["kills"] % 2 else "save", span, rng)
        if code is not None:   # finished before the kill came
            assert code == 0, log.read_text()[-2000:]
            counts["ended first"] += 1
            break
        counts["kills"] += 1
        between = not _checkpoint_temporaries(out) and _hit_a_save(out)
        hit = _hit_a_save(out)
        counts["in a save"] += hit
        counts["between renames"] += between
        counts["in the first save"] += hit and not holds_checkpoint(out)
    if not _complete(out):
        _, log = runner.start(_argv(out))
        assert runner.exit_code(300) == 0, log.read_text()[-2000:]
    _assert_same_as(reference_dir, out)
    assert not list(out.glob(".*.tmp"))
    print(f"chain {chain}: {json.dumps(counts)} survived (resumed to the uninterrupted weights)")


@pytest.mark.slow
def test_a_real_full_disk_stops_cleanly_and_resumes_once_space_is_freed(runner, reference, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {(mounted.stderr or mounted.stdout).strip()}")
    try:
        # Leave room for one checkpoint and a half: the first save fits, the second (written beside the first
        # before it replaces it) does not.
        one = sum((reference[0] / name).stat().st_size for name in CHECKPOINT_FILES)
        stat = os.statvfs(disk)
        (disk / "ballast").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - int(1.5 * one)))
        out = disk / "run"
        _, log = runner.start(_argv(out))
        assert runner.exit_code(300) == 2
        text = log.read_text()
        errors = [line for line in text.splitlines() if line.startswith("eqgen: error:")]
        assert "Traceback" not in text and len(errors) == 1, text[-2000:]
        assert "No space left on device; stopped. The checkpoint of step 1 in" in errors[0], errors
        assert load_training_state(out)["step"] == 1 and weights_step(out / "model.safetensors") == 1
        assert not list(out.glob(".*.tmp"))
        (disk / "ballast").unlink()
        runner.start(_argv(out))
        assert runner.exit_code(300) == 0
        _assert_same_as(reference[0], out)
    finally:
        subprocess.run(["umount", str(disk)], check=True)

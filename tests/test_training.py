"""The shared training loop: resume = uninterrupted (also after a save cut short), atomic checkpoints, settings
that apply or are refused on resume, NaN guard, finite exports, DDP = one big batch."""
import errno
import json
import os
import shutil
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from eqgen.checkpoint import WEIGHTS, load_training_state, load_weights, save_weights, weights_step
from eqgen.errors import EqgenError
from eqgen.files import atomic_write_bytes
from eqgen.generator import GeneratorConfig
from eqgen.tokenizer import TokenizerConfig
from eqgen.devices import resolve_precision
from eqgen.resume import resumed_config
from eqgen.training import RunConfig, Task, clip_and_step, fit, warmup_lr

GLOBAL_BATCH = 8


class Regression(Task):
    """A small MLP fitting a fixed random target; dropout uses the global RNG, so resume must restore it."""

    changeable = frozenset({"lr", "warmup"})

    def __init__(self, crash_at: int | None = None, nan_at: int | None = None, poison_at: int | None = None,
                 lr: float = 1e-2, warmup: int = 3, target_seed: int = 0):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 1))
        self.target = torch.randn(4, 1, generator=torch.Generator().manual_seed(target_seed))
        self.crash_at, self.nan_at, self.poison_at = crash_at, nan_at, poison_at
        self.lr, self.warmup, self.target_seed = lr, warmup, target_seed

    def settings(self):
        return {"lr": self.lr, "warmup": self.warmup, "target_seed": self.target_seed}

    def optimizers(self):
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_lr(self.warmup))
        return {"model": self.opt}

    def schedulers(self):
        return {"model": self.sched}

    def batches(self, start):
        step = start
        while True:
            if step == self.crash_at:
                raise RuntimeError("killed")
            g = torch.Generator().manual_seed(step)
            x = torch.randn(GLOBAL_BATCH, 4, generator=g)
            per_rank = GLOBAL_BATCH // self.world_size
            x = x[self.rank * per_rank:(self.rank + 1) * per_rank]
            yield x, x @ self.target
            step += 1

    def training_step(self, batch, step):
        x, y = batch
        with self.autocast():
            prediction = self.wrapped["model"](x)
        self.forward_dtype = prediction.dtype
        loss = (prediction.float() - y).pow(2).mean()
        if step == self.nan_at:
            loss = loss * float("nan")
        self.opt.zero_grad()
        loss.backward()
        clip_and_step(self.opt, 1.0)
        self.sched.step()
        if step == self.poison_at:   # a weight gone bad while the loss still looked fine
            self.model[0].weight.data[0, 0] = float("inf")
        return {"loss": loss.item()}

    def export_config(self, ema_model):
        return {"kind": "regression"}


def _run(out, steps=12, resume=False, precision="fp32", batch_size=32, **task_kwargs):
    task = Regression(**task_kwargs)
    run = RunConfig(steps=steps, batch_size=batch_size, save_every=5, log_every=1, ema_decay=0.9, precision=precision)
    fit(task, run, out, resume=resume)
    return task


def _assert_same_run(a, b):
    """Two run directories hold bit-identical training states and exported weights."""
    state_a, state_b = load_training_state(a), load_training_state(b)
    assert state_a["step"] == state_b["step"]
    for part in ("modules", "ema"):
        flat_a = state_a[part]["model"] if part == "modules" else state_a[part]
        flat_b = state_b[part]["model"] if part == "modules" else state_b[part]
        assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), part
    ema_a, ema_b = load_weights(a / WEIGHTS), load_weights(b / WEIGHTS)
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_equals_uninterrupted(tmp_path, precision):
    whole = _run(tmp_path / "a", precision=precision)
    assert whole.forward_dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path / "b", crash_at=7, precision=precision)
    assert load_training_state(tmp_path / "b")["step"] == 5
    resumed = _run(tmp_path / "b", resume=True, precision=precision)
    for (k, v), w in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(v, w), k
    ema_a = load_weights(tmp_path / "a" / WEIGHTS)
    ema_b = load_weights(tmp_path / "b" / WEIGHTS)
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(6) == 1, "records after the checkpoint are dropped on resume"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_reduces_loss(tmp_path, precision):
    _run(tmp_path / "r", steps=60, precision=precision)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-5:]) < 0.3 * sum(losses[:5])


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", torch.device("cuda")) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("auto", torch.device("cuda")) == torch.bfloat16
    for avx512_bf16, amx, expected in [(False, False, torch.float32), (True, False, torch.bfloat16),
                                       (False, True, torch.bfloat16)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        assert resolve_precision("auto", cpu) == expected
    with pytest.raises(EqgenError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"))


def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(EqgenError, match="loss became nan at step 7; stopped. The checkpoint of step 5 in .* is "
                                         "kept: continue it with --resume and a lower --lr"):
        _run(tmp_path / "n", nan_at=7)
    state = load_training_state(tmp_path / "n")
    assert state["step"] == 5
    assert all(torch.isfinite(v).all() for v in state["modules"]["model"].values())
    with pytest.raises(EqgenError, match="at step 0; stopped. No checkpoint was saved in .* yet: start again"):
        _run(tmp_path / "first", nan_at=0)


def test_non_finite_weights_are_never_written(tmp_path):
    with pytest.raises(EqgenError, match="weight 0.weight of the model is not finite at step 5; stopped. No "
                                         "checkpoint was saved"):
        _run(tmp_path / "p", poison_at=3)
    assert not (tmp_path / "p/training_state.pt").exists() and not (tmp_path / "p/model.safetensors").exists()
    with pytest.raises(EqgenError, match="tensor b is not finite"):
        save_weights(tmp_path / "w.safetensors", {"a": torch.ones(2), "b": torch.tensor([0.0, float("nan")])})
    assert not (tmp_path / "w.safetensors").exists()


def test_ema_decay_must_lie_in_zero_one():
    for decay in (1.0, 2.0, -0.1, float("nan")):
        with pytest.raises(EqgenError, match=r"EMA decay \(--ema\) must lie in \[0, 1\)"):
            RunConfig(ema_decay=decay)
    assert RunConfig(ema_decay=0.0).ema_decay == 0.0


def test_resume_after_a_save_cut_short_equals_uninterrupted(tmp_path):
    """What a kill -9 during the save of step 10 can leave: temporary files, weights of a newer step than the
    training state (a kill between the renames), a torn last metrics line."""
    whole = tmp_path / "whole"
    _run(whole)
    cut = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="killed"):
        _run(cut, crash_at=11)
    shutil.copy(whole / "model.safetensors", cut / "model.safetensors")   # step 12's weights beside step 10's state
    (cut / ".training_state.pt.k2j4x9.tmp").write_bytes(b"half a checkpoint")
    (cut / ".model.safetensors.0a1b2c.tmp").write_bytes(b"")
    with (cut / "metrics.jsonl").open("a") as f:
        f.write('{"step": 12, "loss": 0.0')
    assert weights_step(cut / "model.safetensors") == 12 and load_training_state(cut)["step"] == 10

    with pytest.raises(RuntimeError, match="killed"):   # a resume killed before its first checkpoint...
        _run(cut, resume=True, crash_at=11)
    assert not list(cut.glob(".*.tmp")), "stale temporary files are removed"
    assert weights_step(cut / "model.safetensors") == 10   # ...already put back the weights of its state
    exported = load_weights(cut / WEIGHTS)
    ema = load_training_state(cut)["ema"]
    assert all(torch.equal(exported[k], ema[k]) for k in ema)
    # The resumed run logged step 11 once more: the first run's record of it and the torn line are gone.
    assert _steps(cut) == list(range(1, 12))

    _run(cut, resume=True)
    _assert_same_run(whole, cut)
    assert _steps(cut) == _steps(whole)


def test_a_directory_without_a_checkpoint_starts_afresh(tmp_path):
    """A first save cut short leaves no training state: not a run, so a fresh start takes the directory."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _run(whole)
    cut.mkdir()
    shutil.copy(whole / "model.safetensors", cut / "model.safetensors")
    shutil.copy(whole / "config.json", cut / "config.json")
    (cut / ".training_state.pt.x1y2z3.tmp").write_bytes(b"half")
    (cut / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    with pytest.raises(EqgenError, match="nothing to resume"):
        _run(cut, resume=True)
    _run(cut)
    _assert_same_run(whole, cut)
    assert _steps(cut) == _steps(whole) and not list(cut.glob(".*.tmp"))


def test_a_full_disk_stops_with_the_previous_checkpoint_kept(tmp_path, monkeypatch):
    whole, full = tmp_path / "whole", tmp_path / "full"
    _run(whole)
    calls = []
    real_fsync = os.fsync

    def fsync(fd):   # the save of step 5 (3 files and the directory) goes through, the next finds the disk full
        calls.append(fd)
        if len(calls) > 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(EqgenError, match="model.safetensors: No space left on device; stopped. The checkpoint of "
                                         "step 5 in .* is kept: continue it with --resume"):
        _run(full)
    monkeypatch.undo()
    assert load_training_state(full)["step"] == 5 and weights_step(full / "model.safetensors") == 5
    assert not list(full.glob(".*.tmp"))
    _run(full, resume=True)
    _assert_same_run(whole, full)


def test_learning_rate_and_warmup_apply_on_resume(tmp_path, capsys):
    _run(tmp_path / "r", steps=5)
    resumed = _run(tmp_path / "r", steps=8, resume=True, lr=1e-3, warmup=10)
    # 8 steps done: warm-up factor (8 + 1) / 10 of the new rate, not the saved 1e-2.
    assert resumed.opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.9)
    assert load_training_state(tmp_path / "r")["schedulers"]["model"]["base_lrs"] == [1e-3]
    assert "lr 0.01 -> 0.001, warmup 3 -> 10" in capsys.readouterr().err


def test_resume_refuses_settings_it_cannot_change(tmp_path):
    _run(tmp_path / "r", steps=5)
    with pytest.raises(EqgenError, match=r"a resumed run keeps them: batch_size 16 \(the run's: 32\)"):
        _run(tmp_path / "r", steps=8, resume=True, batch_size=16)
    with pytest.raises(EqgenError, match=r"target_seed 1 \(the run's: 0\)"):
        _run(tmp_path / "r", steps=8, resume=True, target_seed=1)


def test_a_foreign_training_state_is_one_clear_error(tmp_path):
    _run(tmp_path / "r", steps=5)
    path = tmp_path / "r/training_state.pt"
    state = load_training_state(tmp_path / "r")
    for foreign, message in [({}, "is not an eqgen training state"),
                             ({**state, "kind": "generator"}, "is the training state of a generator, not of a model"),
                             ({**state, "modules": {"model": {"w": torch.zeros(1)}}}, "does not fit this run's model"),
                             ({**state, "rng": state["rng"] * 2}, "saved by 2 process"),
                             ({**state, "optimizers": {"model": {}}}, "does not fit this run")]:
        torch.save(foreign, path)
        with pytest.raises(EqgenError, match=message):
            _run(tmp_path / "r", steps=8, resume=True)


def test_a_resumed_model_config_is_type_checked_and_must_be_the_one_asked_for(tmp_path):
    for cls, values, message in [
            (GeneratorConfig, {"generator": {"depth": "two"}}, "config.json: field 'generator.depth' must be an integer"),
            (GeneratorConfig, {"generator": 3}, "config.json: GeneratorConfig must be an object"),
            (GeneratorConfig, {"classes": []}, "has no 'generator' section"),
            (TokenizerConfig, {"ch_mult": [1, "2"]}, "config.json: field 'ch_mult' must be a list of integers")]:
        (tmp_path / "config.json").write_text(json.dumps(values))
        section = "generator" if cls is GeneratorConfig else None
        with pytest.raises(EqgenError, match=message):
            resumed_config(cls, tmp_path, cls(), section=section)
    (tmp_path / "config.json").write_text(json.dumps({"generator": {"depth": 2}}))
    assert resumed_config(GeneratorConfig, tmp_path, GeneratorConfig(depth=2), section="generator").depth == 2
    with pytest.raises(EqgenError, match=r"depth 3 \(the run's: 2\)"):
        resumed_config(GeneratorConfig, tmp_path, GeneratorConfig(depth=3), section="generator")


def test_metrics_log_with_a_broken_line_inside_is_one_clear_error(tmp_path):
    _run(tmp_path / "r", steps=5)
    lines = (tmp_path / "r/metrics.jsonl").read_text().splitlines()
    (tmp_path / "r/metrics.jsonl").write_text("\n".join(lines[:2] + ["garbage"] + lines[2:]) + "\n")
    with pytest.raises(EqgenError, match="metrics.jsonl: line 3 is not JSON"):
        _run(tmp_path / "r", steps=8, resume=True)


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    _run(tmp_path / "x", steps=5)
    with pytest.raises(EqgenError, match="--resume"):
        _run(tmp_path / "x", steps=5)
    with pytest.raises(EqgenError, match="already trained"):
        _run(tmp_path / "x", steps=5, resume=True)


def test_atomic_write_keeps_previous_file_on_crash(tmp_path, monkeypatch):  # a failed write, not a kill
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"], "no temporary file is left behind"


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644   # not mkstemp's 0600


def test_truncated_training_state_is_a_clear_error(tmp_path):
    _run(tmp_path / "t", steps=5)
    state = tmp_path / "t/training_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(EqgenError, match="not a readable training state"):
        load_training_state(tmp_path / "t")


def _ddp_worker(rank, world_size, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    task = Regression()
    task.model[1].p = 0.0  # dropout draws differ per rank; the comparison below needs the same function
    fit(task, RunConfig(steps=6, save_every=6, log_every=1, ema_decay=0.9, precision="fp32"), out)
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path / "ddp")), nprocs=2, join=True)
    single = Regression()
    single.model[1].p = 0.0
    fit(single, RunConfig(steps=6, save_every=6, log_every=1, ema_decay=0.9, precision="fp32"), tmp_path / "one")
    ddp_state = load_training_state(tmp_path / "ddp")["modules"]["model"]
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-5, atol=1e-6)

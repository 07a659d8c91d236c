"""The shared training loop: resume = uninterrupted, atomic checkpoints, NaN guard, DDP = one big batch."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from eqgen.checkpoint import atomic_write_bytes, load_model_dir, load_training_state
from eqgen.errors import EqgenError
from eqgen.training import RunConfig, Task, clip_and_step, fit, resolve_precision, warmup_lr

GLOBAL_BATCH = 8


class Regression(Task):
    """A small MLP fitting a fixed random target; dropout uses the global RNG, so resume must restore it."""

    def __init__(self, crash_at: int | None = None, nan_at: int | None = None):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 1))
        self.target = torch.randn(4, 1)
        self.crash_at, self.nan_at = crash_at, nan_at

    def optimizers(self):
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-2)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_lr(3))
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
        return {"loss": loss.item()}

    def export_config(self):
        return {"kind": "regression"}


def _run(out, steps=12, resume=False, precision="fp32", **task_kwargs):
    task = Regression(**task_kwargs)
    run = RunConfig(steps=steps, save_every=5, log_every=1, ema_decay=0.9, precision=precision)
    fit(task, run, out, resume=resume)
    return task


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
    _, ema_a = load_model_dir(tmp_path / "a")
    _, ema_b = load_model_dir(tmp_path / "b")
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
    with pytest.raises(EqgenError, match="loss became nan at step 7"):
        _run(tmp_path / "n", nan_at=7)
    state = load_training_state(tmp_path / "n")
    assert state["step"] == 5
    assert all(torch.isfinite(v).all() for v in state["modules"]["model"].values())


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    _run(tmp_path / "x", steps=5)
    with pytest.raises(EqgenError, match="--resume"):
        _run(tmp_path / "x", steps=5)
    with pytest.raises(EqgenError, match="already trained"):
        _run(tmp_path / "x", steps=5, resume=True)


def test_atomic_write_keeps_previous_file_on_crash(tmp_path, monkeypatch):
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

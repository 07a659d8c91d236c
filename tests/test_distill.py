"""The distilled few-step head: it starts as the teacher, learns from the teacher's solves, travels with its
pipeline, samples through every entry point, and is refused in one line where it does not apply."""
import argparse
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from conftest import make_tiny_pipeline
from eqgen import Pipeline
from eqgen.checkpoint import load_training_state
from eqgen.cli import main
from eqgen.distill import StudentConfig, StudentHead, teacher_states
from eqgen.errors import EqgenError
from eqgen.flow import solve

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/official"
TINY = ["--images-per-class", "2", "--tokens", "6", "--teacher-steps", "8", "--batch-size", "64",
        "--save-every", "4", "--ema", "0.5"]
BUILTIN_SMALL = ["--images-per-class", "4", "--tokens", "8", "--teacher-steps", "8", "--batch-size", "128", "--ema", "0.5"]


def _inputs(pipe, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    D, C = pipe.generator.config.width, pipe.generator.config.token_dim
    return torch.randn(2 * n, D, generator=g), torch.randn(n, C, generator=g)


def test_the_student_starts_as_the_teacher(pipe):
    z, noise = _inputs(pipe)
    teacher = pipe.generator.head
    x, t = noise, torch.rand(len(noise))
    for guidance in ("distilled", "per-evaluation"):
        student = StudentHead.from_teacher(pipe.generator, StudentConfig(evals=3, guidance=guidance))
        assert torch.equal(student(x, t, z[:12], torch.full((12,), 3.0)), teacher(x, t, z[:12]))
    # Per-evaluation guidance before training is the teacher's Euler solve on the student's grid.
    student = StudentHead.from_teacher(pipe.generator, StudentConfig(evals=3, rho=1.5, guidance="per-evaluation"))
    with torch.no_grad():
        assert torch.allclose(student.sample(z, noise, 2.5), solve(teacher, z, noise, 3, "euler", 2.5, 1.5), atol=1e-6)


def test_teacher_states_pass_through_the_students_grid(pipe):
    z, noise = _inputs(pipe)
    scale = torch.full((12, 1), 2.0)
    states = teacher_states(pipe.generator.head, z, noise, scale, evals=2, rho=1.5, substeps=3)
    assert states.shape == (3, 12, pipe.generator.config.token_dim)
    assert torch.equal(states[0], noise)
    with torch.no_grad():   # a Heun solve on time_grid(6, 1.5), whose every 3rd time is one of time_grid(2, 1.5)
        fine = solve(pipe.generator.head, z, noise, 6, "heun", 2.0, 1.5)
    assert torch.allclose(states[-1], fine, atol=1e-6)


def _distill(model, out, *extra, settings=TINY):
    return main(["distill", "head", "--model", str(model), "--out", str(out), "--device", "cpu",
                 "--precision", "fp32", *settings, *extra])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny") / "pipe"
    make_tiny_pipeline().save_pretrained(directory)
    return directory


def test_distillation_lowers_the_token_error_and_the_pipeline_carries_the_head(tmp_path):
    # The built-in model, small: 32 sampled sequences of 8 tokens give 256 conditions, 13 of them held out.
    before, after = tmp_path / "before", tmp_path / "after"
    assert _distill("builtin", before, "--evals", "2", "--steps", "1", "--lr", "1e-9", settings=BUILTIN_SMALL) == 0
    assert _distill("builtin", after, "--evals", "2", "--steps", "60", "--lr", "1e-3", settings=BUILTIN_SMALL) == 0
    records = _records(after)
    assert records[-1]["token_error"] < 0.7 * _records(before)[-1]["token_error"]
    assert records[-2]["loss"] < 0.5 * records[0]["loss"]   # measured 0.009 against 0.040
    pipe = Pipeline.from_pretrained(after)
    assert sorted(pipe.generator.students) == [2, 4]   # the new head and the built-in model's own
    images = pipe.generate(["alpine", "coast"], 5, solver="distilled", steps=2, cfg=2.0)
    assert images.shape[0] == 2 and torch.isfinite(images).all()
    # The teacher is the pipeline's own, unchanged.
    teacher = Pipeline.from_pretrained("builtin")
    for k, v in teacher.generator.state_dict().items():
        assert torch.equal(v, pipe.generator.state_dict()[k])
    # Saving keeps the head; a pipeline without it is refused with the way out, in one line.
    pipe.save_pretrained(tmp_path / "copy")
    assert sorted(Pipeline.from_pretrained(tmp_path / "copy").generator.students) == [2, 4]
    with pytest.raises(EqgenError, match="no distilled head of 3 evaluations .*has distilled heads of 2, 4"):
        pipe.generate(["alpine"], 4, solver="distilled", steps=3)


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_resume_equals_uninterrupted(tmp_path, tiny_dir):
    assert _distill(tiny_dir, tmp_path / "whole", "--steps", "8") == 0
    assert _distill(tiny_dir, tmp_path / "parts", "--steps", "4") == 0
    assert _distill(tiny_dir, tmp_path / "parts", "--steps", "8", "--resume") == 0
    a, b = (load_training_state(tmp_path / d) for d in ("whole", "parts"))
    for k, v in a["ema"].items():
        assert torch.equal(v, b["ema"][k]), k
    assert load_file(tmp_path / "whole/distilled-4/model.safetensors").keys() == \
        load_file(tmp_path / "parts/distilled-4/model.safetensors").keys()


@pytest.mark.parametrize("guidance", ["distilled", "per-evaluation"])
def test_guidance_and_temperature_reach_the_student(tmp_path, tiny_dir, guidance):
    out = tmp_path / guidance
    assert _distill(tiny_dir, out, "--evals", "1", "--steps", "4", "--guidance", guidance) == 0
    pipe = Pipeline.from_pretrained(out)
    sampler = pipe.sampler(["a"], 4, solver="distilled", steps=1, cfg=3.0)
    assert sampler.guided == (guidance == "per-evaluation")   # a distilled guidance needs no unconditional branch
    one = pipe.generate(["a"], 4, solver="distilled", steps=1, cfg=1.0)
    three = pipe.generate(["a"], 4, solver="distilled", steps=1, cfg=3.0)
    cold = pipe.generate(["a"], 4, solver="distilled", steps=1, cfg=3.0, temperature=0.5)
    assert not torch.equal(one, three) and not torch.equal(three, cold)


def test_what_the_head_did_not_learn_is_refused(tmp_path, tiny_dir):
    out = tmp_path / "d"
    assert _distill(tiny_dir, out, "--evals", "1", "--steps", "1", "--cfg-max", "4") == 0
    pipe = Pipeline.from_pretrained(out)
    with pytest.raises(EqgenError, match="no distilled head of 4 evaluations .*has distilled heads of 1"):
        pipe.generate(["a"], 4, solver="distilled", steps=4)
    with pytest.raises(EqgenError, match=r"\(it has none\); make one with eqgen distill head --evals 1"):
        Pipeline.from_pretrained(tiny_dir).generate(["a"], 4, solver="distilled", steps=1)
    with pytest.raises(EqgenError, match="learned guidance scales 1–4, not cfg 6"):
        pipe.generate(["a"], 4, solver="distilled", steps=1, cfg=6.0)
    with pytest.raises(EqgenError, match="learned temperatures 0–1, not 1.5"):
        pipe.generate(["a"], 4, solver="distilled", steps=1, temperature=1.5)
    assert pipe.generate(["a"], 4, solver="distilled", steps=1, cfg=4.0).shape[0] == 1


def test_distill_command_errors_are_one_line(tmp_path, tiny_dir, capsys):
    assert main(["distill", "head", "--model", str(tiny_dir), "--out", str(tiny_dir)]) == 2
    assert main(["distill", "head", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["distill", "head", "--out", str(tmp_path / "o"), "--evals", "0"]) == 2
    (tmp_path / "d").mkdir()
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "Traceback" not in err
    # A damaged head config is one line naming the file.
    assert _distill(tiny_dir, tmp_path / "d2", "--evals", "1", "--steps", "1") == 0
    (tmp_path / "d2/distilled-1/config.json").write_text('{"evals": "one"}')
    with pytest.raises(EqgenError, match="distilled-1/config.json: field 'evals' must be an integer"):
        Pipeline.from_pretrained(tmp_path / "d2")


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="official fixtures (../shared/fixtures/official) absent")
def test_a_converted_official_model_distils(tmp_path):
    kwargs = json.loads((FIXTURES / "generator_tiny_config.json").read_text())["constructor_kwargs"]
    kwargs = {k: v for k, v in kwargs.items() if k != "norm_layer"}
    state = load_file(FIXTURES / "generator_tiny_state_dict.safetensors")
    torch.save({"model": state, "model_ema": state, "args": argparse.Namespace(**kwargs)}, tmp_path / "ckpt.pth")
    assert main(["convert", "official", "--tokenizer", str(FIXTURES / "tokenizer_tiny_state_dict_ema_only.safetensors"),
                 "--config", str(FIXTURES / "tokenizer_tiny_config.json"), "--generator", str(tmp_path / "ckpt.pth"),
                 "-o", str(tmp_path / "official")]) == 0
    assert _distill(tmp_path / "official", tmp_path / "d", "--evals", "2", "--steps", "30",
                    "--lr", "3e-3") == 0
    records = _records(tmp_path / "d")
    assert records[-2]["loss"] < records[0]["loss"]
    pipe = Pipeline.from_pretrained(tmp_path / "d")
    assert pipe.generate(["class3"], 4, solver="distilled", steps=2).shape == (1, 3, 32, 16)


def _ddp_worker(rank, world_size, port, model, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert _distill(model, out, "--evals", "2", "--steps", "6") == 0


def test_two_processes_distil_together(tmp_path, tiny_dir):
    """Each process samples its own share of the conditions; DDP keeps the students equal."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tiny_dir), str(tmp_path / "ddp")), nprocs=2, join=True)
    state = load_training_state(tmp_path / "ddp")
    assert len(state["rng"]) == 2 and state["step"] == 6
    pipe = Pipeline.from_pretrained(tmp_path / "ddp")
    assert pipe.generate(["a"], 4, solver="distilled", steps=2).shape[0] == 1
    assert "token_error" in _records(tmp_path / "ddp")[-1]


def test_real_images_add_their_conditions(tmp_path, tiny_dir, capsys):
    small = ["--images-per-class", "2", "--tokens", "8", "--teacher-steps", "8", "--draws", "2", "--steps", "1"]
    assert _distill("builtin", tmp_path / "own", *small, settings=[]) == 0
    assert _distill("builtin", tmp_path / "data", *small, "--data", "landscapes", "--data-images", "16",
                    settings=[]) == 0
    err = capsys.readouterr().err
    # 16 sampled sequences of 8 tokens, then as many teacher-forced renders: twice the lessons
    assert "distill: 242 lessons to learn, 14 held out" in err and "distill: 486 lessons to learn, 26 held out" in err
    # Data whose classes the model does not know is refused in one line.
    assert _distill(tiny_dir, tmp_path / "wrong", "--data", "landscapes") == 2
    assert "has classes this model does not know: desert" in capsys.readouterr().err
    assert _distill(tiny_dir, tmp_path / "none", "--data", str(tmp_path / "no-such-folder")) == 2
    err = capsys.readouterr().err
    assert "--data must be 'landscapes' or an image folder" in err and "distill: sampling" not in err   # before any work

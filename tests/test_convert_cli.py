"""`eqgen convert official`: official-format checkpoints -> a pipeline directory that generates."""
import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eqgen import Pipeline
from eqgen.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/official"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="official fixtures (../shared/fixtures/official) absent")


def test_convert_both_into_a_pipeline(tmp_path, capsys):
    kwargs = json.loads((FIXTURES / "generator_tiny_config.json").read_text())["constructor_kwargs"]
    kwargs = {k: v for k, v in kwargs.items() if k != "norm_layer"}
    state = load_file(FIXTURES / "generator_tiny_state_dict.safetensors")
    # The official layout: torch.save({"model": ..., "model_ema": ..., "args": Namespace}).
    torch.save({"model": state, "model_ema": state, "epoch": 3, "args": argparse.Namespace(**kwargs)},
               tmp_path / "checkpoint-last.pth")
    (tmp_path / "classes.txt").write_text("\n".join(f"scene{i}" for i in range(10)))
    code = main(["convert", "official", "--tokenizer", str(FIXTURES / "tokenizer_tiny_state_dict_ema_only.safetensors"),
                 "--config", str(FIXTURES / "tokenizer_tiny_config.json"), "--generator",
                 str(tmp_path / "checkpoint-last.pth"), "--classes", str(tmp_path / "classes.txt"),
                 "-o", str(tmp_path / "pipe")])
    assert code == 0
    pipe = Pipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.classes[3] == "scene3"
    assert pipe.generate("scene3", 4, steps=2).shape == (1, 3, 32, 16)


def test_convert_errors_are_one_line(tmp_path, capsys):
    assert main(["convert", "official", "-o", str(tmp_path / "x")]) == 2
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint at all")
    assert main(["convert", "official", "--generator", str(tmp_path / "bad.ckpt"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err

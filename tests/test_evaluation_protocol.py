"""A researcher's pipeline end to end, at tiny scale: image files in class folders -> `--data FOLDER` training of
a tokenizer and a generator -> `eqgen sample --out-dir` -> `eqgen eval fid` against the folder -> the long-image
score; a random TorchScript network with the Inception file's interface stands in for Inception."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from eqgen.cli import main
from eqgen.data.landscapes import render

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def _run(capsys, *args):
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    with capsys.disabled():   # the run's transcript, shown with -s
        print(f"$ eqgen {' '.join(map(str, args))}\n{out}")
    return out


@pytest.mark.slow
def test_folder_data_to_fid_and_long_image_scores(tmp_path, capsys):
    data = tmp_path / "photos"
    for c, name in enumerate(["alpine", "coast", "desert", "night"]):
        (data / name).mkdir(parents=True)
        for i in range(16):   # JPEG and PNG, as real folders mix them
            suffix = "jpg" if i % 2 else "png"
            Image.fromarray(render(name, 64, 16, 100 * c + i)).save(data / name / f"{i:03d}.{suffix}")
    inception = tmp_path / "inception_stand_in.pt"
    subprocess.run([sys.executable, "-m", "eqgen.evaluation.stand_in", str(inception)], check=True)

    _run(capsys, "train", "tokenizer", "--preset", "tiny", "--data", data, "--out", tmp_path / "tok", "--steps", 3,
         "--batch-size", 4)
    _run(capsys, "train", "generator", "--preset", "tiny", "--tokenizer", tmp_path / "tok", "--data", data, "--out",
         tmp_path / "gen", "--steps", 3, "--batch-size", 4, "--cache-images", 16, "--cache-width", 64)
    samples = tmp_path / "samples"
    out = _run(capsys, "sample", "--model", tmp_path / "gen", "--out-dir", samples, "-n", 3, "--npz", "--steps", 2,
               "--batch-size", 5)
    assert "12 images (12 new, " in out and len(list(samples.rglob("*.png"))) == 12

    common = ["--inception", inception, "--workers", 0, "--device", "cpu"]
    scores = _scores(_run(capsys, "eval", "fid", samples, data, "--save-stats", tmp_path / "photos_stats.npz", *common))
    assert scores["samples"] == 12 and scores["reference_images"] == 64
    assert scores["fid"] > 0 and scores["is"] >= 1 and 0 <= scores["precision"] <= 1 and 0 <= scores["recall"] <= 1
    again = _scores(_run(capsys, "eval", "fid", samples / "samples.npz", tmp_path / "photos_stats.npz", *common))
    assert again["fid"] == pytest.approx(scores["fid"], rel=1e-6)
    assert (again["precision"], again["recall"]) == (scores["precision"], scores["recall"])

    panoramas = tmp_path / "panoramas"
    _run(capsys, "sample", "--model", tmp_path / "gen", "--out-dir", panoramas, "-n", 2, "--width", 256,
         "--cfg-schedule", "constant", "--steps", 2)
    table = _run(capsys, "eval", "long-fid", panoramas, data, "--window", 32, "--bands", 4, *common).splitlines()
    rows = [line.split() for line in table[1:5]]
    assert [r[1] for r in rows] == ["0-64", "64-128", "128-192", "192-256"] and all(r[2] == "16" for r in rows)
    assert all(np.isfinite(float(x)) for r in rows for x in r[3:]) and table[5].startswith("first vs last band")


def _scores(out):
    return {k: float(v) for k, v in (line.split() for line in out.splitlines() if not line.startswith("wrote"))}

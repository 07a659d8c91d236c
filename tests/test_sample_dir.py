"""`eqgen sample --out-dir`: per-image seeds, resumable sets, the npz, and torchrun ranks that make the same
files as one process."""
import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from conftest import make_tiny_pipeline
from eqgen.cli import main
from eqgen.errors import EqgenError
from eqgen.evaluation.sample_dir import MANIFEST, NPZ, image_seed, sample_to_dir, write_samples
from eqgen.imageio import to_uint8

OPTIONS = dict(steps=2, cfg=2.0)


def _pixels(out_dir):
    return {p.relative_to(out_dir).as_posix(): np.asarray(Image.open(p)) for p in sorted(out_dir.rglob("*.png"))}


def _hashes(out_dir):
    return {p.relative_to(out_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(out_dir.rglob("*")) if p.is_file() and p.name != MANIFEST}


def test_an_image_depends_on_its_own_seed_only(pipe):
    labels, seeds = [0, 1, 2, 3, 1], [5, 6, 7, 8, 9]
    together = to_uint8(pipe.generate(labels, rng=seeds, **OPTIONS))
    apart = np.concatenate([to_uint8(pipe.generate(labels[i:i + 2], rng=seeds[i:i + 2], **OPTIONS))
                            for i in (0, 2, 4)])
    # The same noise whatever the batch; batched arithmetic may round differently by one level at most.
    assert np.abs(together.astype(int) - apart).max() <= 1 and (together == apart).mean() > 0.99
    # One image with its own seed is the image `seed=s` makes alone (what `eqgen panorama --seed s` uses).
    alone = to_uint8(pipe.generate([labels[2]], seed=seeds[2], **OPTIONS))
    assert np.abs(alone[0].astype(int) - together[2]).max() <= 1
    assert len({image_seed(0, c, i) for c in range(50) for i in range(50)} | {image_seed(1, 0, 0)}) == 2501
    with pytest.raises(EqgenError, match="one per image"):
        pipe.generate(labels, rng=seeds[:2])


def test_a_set_is_the_same_for_any_batch_size_and_resumes(pipe, tmp_path):
    a = write_samples(pipe, tmp_path / "a", 3, batch_size=4, npz=True, progress=False, **OPTIONS)
    assert a["images"] == a["generated"] == a["written"] == 12
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.png"))
    assert files[:4] == ["0000_a/00000.png", "0000_a/00001.png", "0000_a/00002.png", "0001_b/00000.png"]
    write_samples(pipe, tmp_path / "b", 3, batch_size=5, progress=False, **OPTIONS)
    first, second = _pixels(tmp_path / "a"), _pixels(tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(np.abs(first[k].astype(int) - second[k]).max() <= 1 for k in first)
    # An interrupted run (a file lost, a batch half written) continues: only unfinished batches are made again.
    before = _hashes(tmp_path / "a")
    (tmp_path / "a" / "0001_b" / "00002.png").unlink()
    resumed = write_samples(pipe, tmp_path / "a", 3, batch_size=4, npz=True, progress=False, **OPTIONS)
    assert resumed["generated"] == 4 and resumed["written"] == 1 and _hashes(tmp_path / "a") == before
    assert not list((tmp_path / "a").rglob(".*"))   # no temporary file left behind
    # More images per class add to the set; other sampler settings are refused.
    assert write_samples(pipe, tmp_path / "a", 4, batch_size=4, progress=False, **OPTIONS)["generated"] == 4
    with pytest.raises(EqgenError, match="other settings.*cfg 2.0 -> 3.0"):
        write_samples(pipe, tmp_path / "a", 3, batch_size=4, progress=False, steps=2, cfg=3.0)


def test_the_npz_holds_every_image_with_its_label(pipe, tmp_path):
    write_samples(pipe, tmp_path, 3, classes=["b", "d"], batch_size=4, npz=True, progress=False, **OPTIONS)
    pixels = _pixels(tmp_path)
    with np.load(tmp_path / NPZ) as data:
        images, labels = data["arr_0"], data["arr_1"]
    assert images.shape == (6, 16, 32, 3) and images.dtype == np.uint8 and sorted(labels) == [1, 1, 1, 3, 3, 3]
    assert list(labels) != sorted(labels)   # shuffled: ADM's IS parts are consecutive rows
    for image, label in zip(images, labels):   # every row is one of its class's files
        assert any(np.array_equal(image, p) for k, p in pixels.items() if k.startswith(f"{label:04d}_"))


def test_sample_out_dir_from_the_command_line(tmp_path, capsys):
    make_tiny_pipeline().save_pretrained(tmp_path / "model")
    out = tmp_path / "samples"
    args = ["sample", "--model", str(tmp_path / "model"), "--out-dir", str(out), "-n", "2", "--class", "a,c",
            "--steps", "2", "--batch-size", "3", "--npz"]
    assert main(args) == 0
    assert f"{out}: 4 images (4 new, " in capsys.readouterr().out
    assert json.loads((out / MANIFEST).read_text())["steps"] == 2 and (out / NPZ).is_file()
    assert main(args[:-1] + ["--cfg", "1.5"]) == 2
    assert "other settings" in capsys.readouterr().err
    for wrong in ([], ["-o", "x.png", "--out-dir", str(out)]):   # one of -o and --out-dir, not none, not both
        assert main(["sample", "--class", "a"] + wrong) == 2


def _rank(rank, port, model, out, results):
    out = Path(out)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from eqgen.evaluation.fid import evaluate_fid

    try:
        summary = sample_to_dir(model, out, 3, batch_size=2, npz=True, progress=False, **OPTIONS)
        scores = evaluate_fid(out / NPZ, results["reference"], results["inception"], device="cpu", batch=5,
                              progress=False)
        if rank == 0:
            torch.save({"summary": summary, "scores": scores}, results["file"])
        else:
            assert summary is None and scores is None
    finally:
        torch.distributed.barrier()   # without it a rank could tear the group down while the other still gathered
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_make_the_same_files_and_scores_as_one(tmp_path):
    from eqgen.data.landscapes import render
    from eqgen.evaluation.fid import evaluate_fid
    from eqgen.evaluation.stand_in import save_stand_in
    from eqgen.imageio import save_png

    model = tmp_path / "model"
    make_tiny_pipeline().save_pretrained(model)
    inception = str(save_stand_in(tmp_path / "stand_in.pt", features=32))
    reference = tmp_path / "renders"
    for i in range(12):
        save_png(render(["alpine", "coast"][i % 2], 32, 16, i), reference / f"{i}.png")
    sample_to_dir(str(model), tmp_path / "one", 3, batch_size=2, npz=True, progress=False, **OPTIONS)
    one = evaluate_fid(tmp_path / "one" / NPZ, reference, inception, device="cpu", batch=5, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = {"inception": inception, "reference": str(reference), "file": str(tmp_path / "two.pt")}
    mp.spawn(_rank, args=(port, str(model), str(tmp_path / "two"), results), nprocs=2, join=True)
    two = torch.load(results["file"], weights_only=False)
    hashes = _hashes(tmp_path / "one")
    print("1 process :", hashes)
    print("2 processes:", _hashes(tmp_path / "two"))
    assert len(hashes) == 13 and _hashes(tmp_path / "two") == hashes   # 12 PNGs and the npz, byte for byte
    assert two["summary"]["images"] == 12
    print("scores, 1 process:", one, "\nscores, 2 processes:", two["scores"])
    for key, value in one.items():   # the features of both ranks' shares, gathered: the one-process statistics
        assert two["scores"][key] == pytest.approx(value, rel=1e-6), key   # float32 batches of other sizes

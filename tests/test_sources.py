"""`--data`: resumable batches from the landscapes or a folder, different per process and per epoch."""
import numpy as np
import pytest
import torch
from PIL import Image

from eqgen.data.sources import ImageSource
from eqgen.errors import EqgenError


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    return tmp_path


@pytest.mark.parametrize("spec", ["landscapes", "folder"])
def test_batches_resume_exactly_and_differ_by_rank(spec, folder):
    source = ImageSource(str(folder) if spec == "folder" else spec, 16, 16, seed=3)
    run = [x for _, x in zip(range(5), source.batches(4))]
    resumed = [x for _, x in zip(range(2), source.batches(4, start=3))]
    for (a, la), (b, lb) in zip(run[3:], resumed):
        assert torch.equal(a, b) and torch.equal(la, lb)
    other = next(source.batches(4, rank=1, world_size=2))
    assert not torch.equal(other[0], next(source.batches(4, rank=0, world_size=2))[0])
    assert run[0][0].shape == (4, 3, 16, 16) and run[0][0].min() >= -1 and run[0][0].max() <= 1


def test_folder_epochs_draw_new_crops(folder):
    source = ImageSource(str(folder), 16, 16, seed=0)
    per_epoch = 12 // 4
    batches = [x for _, x in zip(range(2 * per_epoch), source.batches(4, workers=0))]
    first = torch.cat([b[0] for b in batches[:per_epoch]])
    second = torch.cat([b[0] for b in batches[per_epoch:]])
    assert sorted(first.sum(dim=(1, 2, 3)).tolist()) != sorted(second.sum(dim=(1, 2, 3)).tolist())


def test_held_out_and_errors(tmp_path):
    wide = ImageSource("landscapes", 32, 32).held_out(3, width=128)
    assert wide.shape == (3, 3, 32, 128)
    with pytest.raises(EqgenError, match="neither"):
        ImageSource(str(tmp_path / "missing"), 16, 16)

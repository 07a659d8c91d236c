"""The built-in landscapes: deterministic, any width, chunk = crop, stationary along x, class-distinct."""
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from eqgen.cli import main
from eqgen.data import CLASSES, class_index, iterate_landscapes, render, render_batch
from eqgen.errors import EqgenError

Z_BOUND = 5.0  # standard errors: with a few hundred comparisons a false alarm has odds of about 1e-4


def test_same_seed_same_image_other_seed_other_image():
    for name in CLASSES:
        a = render(name, 48, 32, seed=7)
        assert a.dtype == np.uint8 and a.shape == (32, 48, 3)
        assert np.array_equal(a, render(name, 48, 32, seed=7))
        assert not np.array_equal(a, render(name, 48, 32, seed=8))


@pytest.mark.parametrize("height,width", [(8, 1), (32, 7), (32, 1000), (64, 64), (256, 24)])
def test_any_width_and_height(height, width):
    images = render_batch(list(CLASSES), range(len(CLASSES)), width, height)
    assert images.shape == (len(CLASSES), height, width, 3) and images.dtype == np.uint8
    assert images.std() > 10  # a scene, not a flat colour


def test_a_chunk_at_x0_is_the_crop_of_a_wider_render():
    wide = render_batch(list(CLASSES), range(len(CLASSES)), 400, 32)
    for x0 in (0, 1, 37, 300):
        chunk = render_batch(list(CLASSES), range(len(CLASSES)), 100, 32, x0=x0)
        assert np.array_equal(chunk, wide[:, :, x0:x0 + 100])
    far = render("coast", 90, 64, seed=3, x0=10 ** 7 - 30)  # deep into a panorama, and left of 0
    assert np.array_equal(far[:, 30:], render("coast", 60, 64, seed=3, x0=10 ** 7))
    assert np.array_equal(render("night", 50, 32, 1, x0=-50)[:, 20:], render("night", 30, 32, 1, x0=-30))


# sha256 (first 16 hex digits) of render_batch(CLASSES[k] twice, seeds, width, height, x0) for every class k,
# and of one iterate_landscapes batch: any change to a scene, a hash or a random stream shows here.
PINNED = {
    (37, 32, 0, (0, 5)): ["4733dccba52e6fe4", "8cf69fe691f35c45", "bbe88b5a7347c0b8", "97e9b3b4657ab89a",
                          "fae663d6c34d2bd5", "964bedadcb2cd5e7", "6c32d18aee7aaaf5", "54b925ca0db87a2c"],
    (160, 64, -45, (7, 2 ** 40 + 3)): ["ff937b2ab620b707", "4b9c4e7bf9700c11", "d0710dcd0dcb4a2a", "9f70c5df34429b7d",
                                       "a223a2032df545fd", "9effc3bf192533d6", "b0ec5576b9fbbf3b", "ecea8b621ac6f632"],
    (96, 24, 10 ** 7 + 11, (1, 123456789)): ["acdce2290daad36d", "2b4dfb43de7e91e0", "4905930e05b32bb4",
                                             "bbdf74f3dc54111a", "6162c2a632ed38d6", "e50820ea02fb63ce",
                                             "56130960465c1829", "c973a0a381135636"],
}
PINNED_BATCH = "824be9d73f2d30fc"  # next(iterate_landscapes(8, 16, 24, seed=3, start=5)): images and labels


def _digest(*arrays) -> str:
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()[:16]


def _avx512_power() -> bool:
    """Whether numpy runs float32 power on its AVX-512 (SVML) kernel, which need not round like the
    AVX2 / SSE kernels the pinned hashes were recorded with (numpy 2.4, x86-64)."""
    info = getattr(getattr(np, "_core", None), "_multiarray_umath", None)
    current = getattr(info, "__cpu_targets_info__", {}).get("power", {}).get("fff", {}).get("current", "")
    return "V4" in current or "AVX512" in current


@pytest.mark.skipif(_avx512_power(), reason="numpy's AVX-512 float32 power may round pixels differently")
def test_renders_are_pinned_bit_for_bit():
    for (width, height, x0, seeds), digests in PINNED.items():
        got = [_digest(render_batch([name] * len(seeds), list(seeds), width, height, x0=x0)) for name in CLASSES]
        assert got == digests, (width, height, x0)
    images, labels = next(iterate_landscapes(8, 16, 24, seed=3, start=5))
    assert _digest(images.numpy(), labels.numpy()) == PINNED_BATCH


def _column_stats(crops: np.ndarray) -> np.ndarray:
    """Per image [N, 6]: mean R, G, B; mean |difference of adjacent columns|; brightness of the first and of
    the last column (edge effects would show there)."""
    x = crops.astype(np.float64) / 255
    brightness = x.mean(-1)
    return np.stack([*x.mean((1, 2)).T, np.abs(np.diff(x, axis=2)).mean((1, 2, 3)),
                     brightness[:, :, 0].mean(1), brightness[:, :, -1].mean(1)], 1)


def _max_z(a: np.ndarray, b: np.ndarray) -> float:
    """Largest two-sample z score over the statistics (columns) of two independent samples [N, S]."""
    se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    return float(np.max(np.abs(a.mean(0) - b.mean(0)) / np.maximum(se, 1e-12)))


def _offset_z(wide: np.ndarray, narrow: np.ndarray) -> list[float]:
    """For each block of narrow's width in the wide renders: its max z score against the narrow renders."""
    w = narrow.shape[2]
    reference = _column_stats(narrow)
    return [_max_z(_column_stats(wide[:, :, x:x + w]), reference) for x in range(0, wide.shape[2], w)]


def test_crops_at_every_offset_are_distributed_like_narrow_renders():
    n, h, w = 96, 32, 32
    for name in CLASSES:
        wide = render_batch([name] * n, range(n), 8 * w, h)
        narrow = render_batch([name] * 2 * n, range(10 ** 6, 10 ** 6 + 2 * n), w, h)
        z = _offset_z(wide, narrow)
        assert max(z) < Z_BOUND, (name, np.round(z, 1))
        if name == "desert":  # the same test catches a scene that depends on x (a brightness ramp here)
            ramp = np.clip(wide + np.linspace(0, 40, 8 * w)[None, None, :, None], 0, 255).astype(np.uint8)
            assert max(_offset_z(ramp, narrow)) > Z_BOUND


def _layout_stats(images: np.ndarray) -> np.ndarray:
    """Per image: mean colour of each quarter of the rows (sky, horizon, middle ground, foreground)."""
    x = images.astype(np.float64) / 255
    return x.reshape(len(x), 4, -1, 3).mean(2).reshape(len(x), -1)


def test_classes_differ_in_colour_and_layout():
    n = 96
    stats = {name: _layout_stats(render_batch([name] * n, range(n), 32, 32)) for name in CLASSES}
    for i, a in enumerate(CLASSES):
        for b in CLASSES[i + 1:]:
            assert _max_z(stats[a], stats[b]) > Z_BOUND, (a, b)


def test_class_index_and_bad_inputs():
    assert [class_index(name) for name in CLASSES] == list(range(len(CLASSES)))
    with pytest.raises(EqgenError, match="unknown landscape class 'moon'.*desert, alpine"):
        class_index("moon")
    for bad in [dict(width=0, height=32), dict(width=8, height=4), dict(width=8.5, height=32)]:
        with pytest.raises(EqgenError):
            render("forest", **bad)
    with pytest.raises(EqgenError, match="x0"):
        render("forest", 8, 32, x0=1.5)
    with pytest.raises(EqgenError, match="unknown landscape class 'jungle'"):
        iterate_landscapes(4, 32, 32, classes=["forest", "jungle"])
    with pytest.raises(EqgenError, match="batch_size"):  # at the call, not at the first batch
        iterate_landscapes(0, 32, 32)


def test_iterator_batches_depend_only_on_seed_and_step():
    stream = iterate_landscapes(6, 32, 40, seed=3)
    batches = [next(stream) for _ in range(4)]
    images, labels = batches[0]
    assert images.shape == (6, 3, 32, 40) and images.dtype == torch.float32
    assert labels.shape == (6,) and labels.dtype == torch.long
    assert -1 <= images.min() < images.max() <= 1 and 0 <= labels.min() and labels.max() < len(CLASSES)
    resumed = next(iterate_landscapes(6, 32, 40, seed=3, start=2))
    assert torch.equal(resumed[0], batches[2][0]) and torch.equal(resumed[1], batches[2][1])
    assert not torch.equal(batches[0][0], batches[1][0])
    assert not torch.equal(batches[0][0], next(iterate_landscapes(6, 32, 40, seed=4))[0])
    only = next(iterate_landscapes(16, 16, 16, seed=0, classes=["tundra", "night"]))[1]
    assert set(only.tolist()) == {0, 1}


def test_cli_classes_render_grid(tmp_path, capsys):
    assert main(["data", "classes"]) == 0
    assert capsys.readouterr().out.split() == list(CLASSES)
    out = tmp_path / "alpine.png"
    assert main(["data", "render", "--class", "alpine", "--width", "256", "--height", "32", "--seed", "3",
                 "-o", str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), render("alpine", 256, 32, 3))
    grid = tmp_path / "grid.png"
    assert main(["data", "grid", "--per-class", "3", "--height", "16", "--width", "24", "--classes",
                 "coast,night", "-o", str(grid)]) == 0
    assert Image.open(grid).size == (3 * 24 + 2 * 2, 2 * 16 + 2)


@pytest.mark.parametrize("args,message", [
    (["render", "--class", "jungle", "--width", "64"], "unknown landscape class 'jungle'"),
    (["render", "--class", "alpine", "--width", "60"], "multiple of the token width 8"),
    (["render", "--class", "alpine", "--width", "60", "--token-width", "6", "--height", "2"], "height"),
    (["grid", "--per-class", "0"], "--per-class: must be a positive integer"),
    (["grid", "--classes", "desert,moon"], "unknown landscape class 'moon'"),
])
def test_cli_bad_arguments_fail_with_one_line(tmp_path, capsys, args, message):
    assert main(["data", *args, "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["data", "render", "--class", "night", "--width", "16", "-o", str(blocker / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and err.count("\n") == 1

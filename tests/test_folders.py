"""Image folders: broken files skipped and counted in one line, every pixel mode to RGB, cover-resize and crops,
seeded augmentation, list files, clear errors, `eqgen data inspect`, and folder trees with symlink loops,
unreadable parts and empty classes."""
import io
import json
import logging
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eqgen.cli import main
from eqgen.data.folders import ImageFolder, describe, index_folder, to_rgb
from eqgen.data.sources import ImageSource
from eqgen.errors import EqgenError
from eqgen.imageio import from_uint8

RAMP16 = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 8-bit level k stored as 257 k
TINY_COLOUR = (30, 60, 90)
BROKEN = {"cats/zero.jpg": "empty", "cats/trunc.jpg": "unreadable", "dogs/trunc.png": "unreadable",
          "dogs/notes.jpg": "not an image", "dogs/noise.png": "not an image", "dogs/readme.txt": "not an image"}


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _rgba():
    # opaque blue, fully transparent red (must become white), half-transparent red
    return Image.fromarray(np.array([[[0, 0, 255, 255], [255, 0, 0, 0], [255, 0, 0, 128]]], np.uint8), "RGBA")


def _palette():
    image = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    image.putpalette([255, 0, 0, 10, 20, 30] + [0] * 762)
    image.info["transparency"] = 0  # index 0 (red) is transparent
    return image


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """2 classes: 8 valid images in 6 pixel modes, 6 broken files, and hidden files that must be ignored."""
    root = tmp_path_factory.mktemp("images")
    for name in ("cats", "dogs", ".hidden"):
        (root / name).mkdir()
    Image.fromarray(_noise(30, 40)).save(root / "cats/rgb.jpg")
    Image.fromarray(np.full((20, 24), 100, np.uint8), "L").save(root / "cats/gray.png")
    _rgba().save(root / "cats/rgba.png")
    _palette().save(root / "cats/pal.png")
    Image.new("RGB", (5, 7), TINY_COLOUR).save(root / "cats/tiny.png")
    Image.fromarray(_noise(12, 20, 1)).convert("CMYK").save(root / "dogs/cmyk.tif")
    Image.fromarray(RAMP16).save(root / "dogs/ramp16.png")
    Image.fromarray(RAMP16.astype(np.int32)).save(root / "dogs/int32.tif")

    (root / "cats/zero.jpg").write_bytes(b"")
    jpeg, png = _encoded(Image.fromarray(_noise(30, 40)), "JPEG"), _encoded(Image.fromarray(_noise(30, 40)), "PNG")
    (root / "cats/trunc.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "dogs/trunc.png").write_bytes(png[: len(png) // 2])
    (root / "dogs/notes.jpg").write_text("not a picture, just a renamed text file\n")
    (root / "dogs/noise.png").write_bytes(np.random.default_rng(2).bytes(500))
    (root / "dogs/readme.txt").write_text("about the dogs\n")
    (root / "cats/.DS_Store").write_bytes(b"\0\1\2")
    Image.new("RGB", (8, 8)).save(root / ".hidden/ignored.png")
    return root


def test_broken_files_are_skipped_counted_and_reported_in_one_line(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="eqgen"):
        dataset = ImageFolder(folder, 16)
    assert len(dataset) == 8
    assert {s.path: s.reason for s in dataset.index.skipped} == BROKEN
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "\n" not in message
    assert "skipped 6 of 14 files" in message
    assert all(part in message for part in ("3 not an image", "2 unreadable", "1 empty"))


def test_classes_labels_shapes_and_range(folder):
    dataset = ImageFolder(folder, 16, 24, seed=3)
    assert dataset.classes == ["cats", "dogs"]   # label i is classes[i]: the labels below are cats 0, dogs 1
    labels = []
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert image.shape == (3, 16, 24) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
        labels.append(label)
    assert labels == [0] * 5 + [1] * 3
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_every_pixel_mode_converts_to_the_right_rgb(folder):
    def rgb(name):
        with Image.open(folder / name) as image:
            return np.asarray(to_rgb(image)).astype(int)

    assert (rgb("cats/gray.png") == 100).all()
    rgba = rgb("cats/rgba.png")[0]
    assert rgba[0].tolist() == [0, 0, 255] and rgba[1].tolist() == [255, 255, 255]  # transparent -> white
    assert np.abs(rgba[2] - [255, 255 * (1 - 128 / 255), 255 * (1 - 128 / 255)]).max() <= 1
    assert rgb("cats/pal.png").tolist() == [[[255] * 3, [10, 20, 30]], [[10, 20, 30], [255] * 3]]
    assert (rgb("dogs/cmyk.tif") == _noise(12, 20, 1)).all()
    levels = np.arange(256).reshape(16, 16)
    for name in ("dogs/ramp16.png", "dogs/int32.tif"):  # 16-bit scaled, not clipped at 255
        assert (rgb(name) == levels[..., None]).all()


def test_tiny_images_are_upscaled(folder):
    dataset = ImageFolder(folder, 32, train=False)
    tiny = [path for path, _ in dataset.index.samples].index("cats/tiny.png")
    image, _ = dataset[tiny]
    expected = torch.tensor(TINY_COLOUR, dtype=torch.float32) / 127.5 - 1
    assert image.shape == (3, 32, 32)
    assert torch.allclose(image, expected[:, None, None].expand(3, 32, 32), atol=1.5 / 127.5)


def _one_image_folder(root, array, copies=1):
    (root / "only").mkdir(parents=True)
    for i in range(copies):
        Image.fromarray(array).save(root / f"only/{i:02d}.png")
    return root


def test_wide_target_keeps_the_height_and_center_crops(tmp_path):
    array = _noise(20, 80, 4)
    dataset = ImageFolder(_one_image_folder(tmp_path, array), 10, 20, train=False)
    # reference: resize the whole image so its height is 10 (width 40), then take the middle 20 columns
    whole = np.asarray(Image.fromarray(array).resize((40, 10), Image.Resampling.BICUBIC))
    assert torch.equal(dataset[0][0], from_uint8(whole[:, 10:30]))


def test_augmentation_is_seeded_and_changes_with_the_epoch(folder):
    def items(seed, epoch=0):
        dataset = ImageFolder(folder, 12, seed=seed)
        return [dataset[epoch, i][0] for i in range(len(dataset))]

    same = items(0)
    assert all(torch.equal(a, b) for a, b in zip(same, items(0)))
    assert not all(torch.equal(a, b) for a, b in zip(same, items(1)))
    assert not all(torch.equal(a, b) for a, b in zip(same, items(0, epoch=1)))


def test_flips_some_indices_and_not_others(tmp_path):
    ramp = np.repeat(np.linspace(0, 255, 16).astype(np.uint8)[None, :, None], 8, 0).repeat(3, 2)
    root = _one_image_folder(tmp_path, ramp, copies=16)  # exactly the crop size: the flip is the only change
    plain = ImageFolder(root, 8, 16, train=False)[0][0]
    dataset = ImageFolder(root, 8, 16, seed=5)
    flipped = []
    for i in range(len(dataset)):
        image = dataset[i][0]
        assert torch.equal(image, plain) or torch.equal(image, plain.flip(-1))
        flipped.append(torch.equal(image, plain.flip(-1)))
    assert 0 < sum(flipped) < len(flipped)
    assert all(torch.equal(ImageFolder(root, 8, 16, train=False)[i][0], plain) for i in range(4))  # eval: never


def test_files_that_break_at_load_time_give_way_to_the_next_good_one(folder, tmp_path, caplog):
    # Unverified: only the empty file and the unknown extension are caught at index time.
    dataset = ImageFolder(folder, 8, verify=False)
    assert {s.path for s in dataset.index.skipped} == {"cats/zero.jpg", "dogs/readme.txt"}
    with caplog.at_level(logging.WARNING, logger="eqgen"):
        for i in range(len(dataset)):
            assert dataset[i][0].shape == (3, 8, 8)
    assert dataset.load_failures == 4
    assert len([r for r in caplog.records if "at load time" in r.getMessage()]) == 4

    # Verified, then damaged on disk: the next image (and its label) comes instead.
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(_noise(10, 10)).save(tmp_path / f"{name}/x.png")
    dataset = ImageFolder(tmp_path, 8, train=False)
    (tmp_path / "a/x.png").write_bytes(b"gone")
    image, label = dataset[0]
    assert label == 1 and dataset.load_failures == 1
    assert torch.equal(image, dataset[1][0])


def test_list_file_with_names_or_integer_labels(folder, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("# path label\ndogs/ramp16.png hound\n\ncats/gray.png tabby\ncats/missing.png tabby\n")
    dataset = ImageFolder(folder, 8, list_file=names)
    assert dataset.classes == ["hound", "tabby"]
    assert [label for _, label in dataset.index.samples] == [0, 1]
    assert [(s.path, s.reason) for s in dataset.index.skipped] == [("cats/missing.png", "missing")]

    ids = tmp_path / "ids.txt"
    ids.write_text("/cats/rgb.jpg 2\n/dogs/cmyk.tif 0\n")  # Places writes a leading slash
    dataset = ImageFolder(folder, 8, list_file=ids)
    assert dataset.classes == ["0", "1", "2"] and [dataset[i][1] for i in range(2)] == [2, 0]


@pytest.mark.parametrize("make,message", [
    (lambda root: None, "not found"),
    (lambda root: root.mkdir(), "no class subfolders"),
    (lambda root: (root / "a").mkdir(parents=True), "no files"),
    (lambda root: ((root / "a").mkdir(parents=True), (root / "a/x.jpg").write_bytes(b"")), "no readable image"),
])
def test_clear_errors_for_unusable_folders(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(EqgenError, match=message):
        ImageFolder(root, 8)


def test_clear_errors_for_bad_arguments(folder, tmp_path):
    with pytest.raises(EqgenError, match="must be positive"):
        ImageFolder(folder, 0)
    with pytest.raises(EqgenError, match="cannot read list file"):
        ImageFolder(folder, 8, list_file=tmp_path / "absent.txt")
    (tmp_path / "bad.txt").write_text("cats/gray.png\n")
    with pytest.raises(EqgenError, match="bad.txt:1"):
        ImageFolder(folder, 8, list_file=tmp_path / "bad.txt")


def test_inspect_reports_classes_sizes_and_skipped_files(folder, tmp_path, capsys):
    assert main(["data", "inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "8 images in 2 classes" in out
    assert "images per class: min 3, median 4, max 5" in out  # cats 5, dogs 3
    assert "height (px): min 1, median 14, max 30" in out  # 1 2 7 12 | 16 16 20 30
    assert "skipped 6 of 14 files" in out
    assert all(f"{path}: {reason}" in out for path, reason in BROKEN.items())

    assert main(["data", "inspect", str(tmp_path / "absent")]) == 2
    assert "eqgen: error:" in capsys.readouterr().err


# -- folder trees with links, unreadable parts and empty classes ---------------------------------------------


def _images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_noise(8, 8, i)).save(folder / f"{i}.png")


def _folder_reasons(index):
    return {s.path: s.reason for s in index.skipped_folders}


def test_every_folder_is_indexed_once_through_symlink_loops_and_second_links(tmp_path):
    _images(tmp_path / "alpha", 9)
    _images(tmp_path / "beta", 9)
    (tmp_path / "alpha/loop").symlink_to("../alpha")  # without the check: alpha/loop/loop/... 40 levels deep
    (tmp_path / "alpha/up").symlink_to("..")
    (tmp_path / "beta/twin").symlink_to("../alpha")
    (tmp_path / "gamma").symlink_to("alpha")  # a class folder that is another class's folder
    index = index_folder(tmp_path)
    assert index.classes == ["alpha", "beta"] and len(index.samples) == 18
    assert _folder_reasons(index) == {"alpha/loop": "symlink loop", "alpha/up": "symlink loop",
                                      "beta/twin": "linked twice", "gamma": "linked twice"}
    report = describe(index)
    assert "18 images in 2 classes" in report
    assert "skipped 4 folder(s) (2 symlink loop, 2 linked twice):" in report
    assert "alpha/loop: symlink loop (leads back to alpha)" in report


def test_empty_class_folders_are_reported_and_are_not_classes(tmp_path, caplog):
    _images(tmp_path / "alpine", 3)
    _images(tmp_path / "coast", 2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_hidden").mkdir()
    (tmp_path / "only_hidden/.DS_Store").write_bytes(b"\0")
    _images(tmp_path / "broken", 0)
    (tmp_path / "broken/x.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="eqgen"):
        dataset = ImageFolder(tmp_path, 8)
    assert dataset.classes == ["alpine", "coast"]
    assert [label for _, label in dataset.index.samples] == [0, 0, 0, 1, 1]
    assert _folder_reasons(dataset.index) == {"broken": "no usable image", "empty": "empty class",
                                              "only_hidden": "empty class"}
    warning, = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "3 folder(s) (2 empty class, 1 no usable image)" in warning
    assert "empty: empty class (no files; not made a class)" in describe(dataset.index)
    # training proceeds with what is usable
    images, labels = next(ImageSource(str(tmp_path), 8, 8).batches(4))
    assert images.shape == (4, 3, 8, 8) and set(labels.tolist()) <= {0, 1}


def test_a_folder_with_nothing_usable_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop/again").symlink_to("..")
    with pytest.raises(EqgenError, match=r"no files in its 2 class folder\(s\); skipped 1 folder\(s\) \(1 symlink loop\)"):
        ImageFolder(tmp_path, 8)


def _unprivileged(function):
    """function() where file permissions apply. Root reads everything, so as root it runs in a forked child
    that became `nobody` (the modules it needs are already imported); its result comes back as JSON."""
    if os.geteuid() != 0:
        return function()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            os.setuid(pwd.getpwnam("nobody").pw_uid)
            os.write(write, json.dumps(function()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result = pipe.read()
    os.waitpid(pid, 0)
    assert result, "the unprivileged child failed"
    return json.loads(result)


def test_unreadable_folders_and_files_are_counted_and_reported():
    root = Path(tempfile.mkdtemp())  # not under pytest's root-only tmp folder: `nobody` must reach it
    try:
        root.chmod(0o755)
        _images(root / "a", 2)
        _images(root / "a/locked", 3)
        (root / "a/locked").chmod(0)
        (root / "a/secret.png").write_bytes((root / "a/0.png").read_bytes())
        (root / "a/secret.png").chmod(0)
        _images(root / "b", 2)
        (root / "b/cycle.png").symlink_to("cycle2.png")  # a link cycle: unreadable whoever reads it
        (root / "b/cycle2.png").symlink_to("cycle.png")
        (root / "b/gone.png").symlink_to("nowhere.png")
        os.mkfifo(root / "b/pipe.png")  # opening it would block

        def inspect():
            index = index_folder(root)
            return {"classes": index.classes, "images": len(index.samples), "report": describe(index),
                    "files": {s.path: s.reason for s in index.skipped}, "folders": _folder_reasons(index)}

        found = _unprivileged(inspect)
    finally:
        for path in (root / "a/locked", root / "a/secret.png"):
            path.chmod(0o755)
        shutil.rmtree(root)
    assert found["classes"] == ["a", "b"] and found["images"] == 4
    assert found["folders"] == {"a/locked": "unreadable"}
    assert found["files"] == {"a/secret.png": "unreadable", "b/cycle.png": "unreadable",
                              "b/cycle2.png": "unreadable", "b/gone.png": "missing", "b/pipe.png": "not a file"}
    assert "skipped 1 folder(s) (1 unreadable):" in found["report"]
    assert "skipped 5 of 9 files (3 unreadable, 1 missing, 1 not a file):" in found["report"]

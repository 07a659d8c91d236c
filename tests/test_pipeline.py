"""Pipeline: save/load, generation, tiled decoding, panoramas and outpainting on tiny random models."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from conftest import save_flat_pipeline

from eqgen import ColumnTokenizer, EquivariantGenerator, Pipeline
from eqgen.cli import main
from eqgen.data.landscapes import render
from eqgen.errors import EqgenError
from eqgen.imageio import fit_image, from_uint8, load_image
from eqgen.pipeline import SEAM_BLEND, join, load_tokenizer

CLASSES = ["a", "b", "c", "d"]


def test_generate_shapes_and_seeds(pipe):
    images = pipe.generate(["a", "d", 1], num_tokens=6, steps=3, seed=1)
    assert images.shape == (3, 3, pipe.height, 6 * pipe.token_width)
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, pipe.generate(["a", "d", 1], num_tokens=6, steps=3, seed=1))
    assert not torch.equal(images, pipe.generate(["a", "d", 1], num_tokens=6, steps=3, seed=2))


def test_save_and_load_roundtrip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    again = Pipeline.from_pretrained(tmp_path / "p")
    assert again.classes == CLASSES
    torch.testing.assert_close(again.generate("b", 4, steps=2), pipe.generate("b", 4, steps=2))
    pipe.save_pretrained(tmp_path / "half", dtype=torch.float16)
    weights = "generator/model.safetensors"
    assert (tmp_path / "half" / weights).stat().st_size < 0.6 * (tmp_path / "p" / weights).stat().st_size


def equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return a.state_dict().keys() == b.state_dict().keys() and all(
        torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_each_component_of_a_saved_pipeline_loads_on_its_own(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["config.json", "generator", "tokenizer"]
    assert json.loads((tmp_path / "p/config.json").read_text()) == {
        "tokenizer": "ColumnTokenizer", "generator": "EquivariantGenerator", "classes": CLASSES}
    tokenizer = ColumnTokenizer.from_pretrained(tmp_path / "p/tokenizer")
    generator = EquivariantGenerator.from_pretrained(tmp_path / "p/generator")
    assert tokenizer.config == pipe.tokenizer.config and equal(tokenizer, pipe.tokenizer)
    assert generator.config == pipe.generator.config and equal(generator, pipe.generator)
    # a pipeline's tokenizer is what training a generator or fine-tuning a tokenizer may start from
    assert equal(load_tokenizer(tmp_path / "p"), pipe.tokenizer)
    assert equal(load_tokenizer(tmp_path / "p/tokenizer"), pipe.tokenizer)


def test_a_directory_without_sub_folders_still_loads(pipe, tmp_path):
    """The layout of the shipped model and of earlier runs: both configs in config.json, the weights beside."""
    save_flat_pipeline(pipe, tmp_path / "flat")
    again = Pipeline.from_pretrained(tmp_path / "flat")
    assert again.classes == CLASSES and equal(again.tokenizer, pipe.tokenizer) and equal(again.generator, pipe.generator)
    assert equal(load_tokenizer(tmp_path / "flat"), pipe.tokenizer)
    assert load_tokenizer("builtin").config == Pipeline.from_pretrained().tokenizer.config


def test_clear_errors(pipe, tmp_path):
    with pytest.raises(EqgenError, match="unknown class 'zebra'"):
        pipe.labels("zebra")
    with pytest.raises(EqgenError, match="multiple of"):
        pipe.panorama("a", 30)
    with pytest.raises(EqgenError, match="not found"):
        Pipeline.from_pretrained(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/config.json").write_text("{}")
    with pytest.raises(EqgenError, match="not an eqgen pipeline"):
        Pipeline.from_pretrained(tmp_path / "junk")


def test_tiled_decode(pipe):
    tokens = torch.randn(1, 40, 4)
    whole = pipe.decode(tokens)
    one_tile = np.concatenate([p for _, p in pipe.decode_tiles(tokens, tile=40, overlap=4)], axis=1)
    assert np.array_equal(one_tile, (whole[0].permute(1, 2, 0).add(1).mul(127.5).round()).to(torch.uint8).numpy())
    pieces = list(pipe.decode_tiles(tokens, tile=12, overlap=3))
    starts = [x0 for x0, _ in pieces]
    assert starts == sorted(starts) and starts[0] == 0
    widths = [p.shape[1] for _, p in pieces]
    assert starts == [sum(widths[:i]) for i in range(len(pieces))]  # each piece starts where the last ended
    tiled = np.concatenate([p for _, p in pieces], axis=1)
    assert tiled.shape == (pipe.height, 40 * pipe.token_width, 3)
    # How close tiles come to a whole decode is bounded on the shipped tokenizer (test_builtin.py): this random
    # one's attention spreads over its whole latent, so its tiles differ from a whole decode everywhere.


def test_panorama_and_outpainting(pipe):
    f = pipe.token_width
    strip = pipe.panorama("c", 30 * f, steps=2, tile=12, overlap=3, progress=False)
    assert strip.shape == (pipe.height, 30 * f, 3) and strip.dtype == np.uint8
    left = pipe.generate("c", 6, steps=2, seed=5)[0]
    tokens = pipe.panorama_tokens("c", 20 * f, left=left, steps=2, seed=3)
    assert tokens.shape == (1, 20, 4)
    assert torch.equal(tokens[:, :6], pipe.encode(left[None]))  # the left image's tokens, then new ones
    assert not torch.equal(tokens[:, 6:], pipe.panorama_tokens("c", 20 * f, steps=2, seed=3)[:, 6:])


def test_outpainting_keeps_the_given_pixels_and_joins_the_decoded_continuation(pipe):
    f, L = pipe.token_width, 6 * pipe.token_width
    given = render("forest", L, pipe.height, seed=1)
    options = dict(left=from_uint8(given), steps=2, seed=3, progress=False)
    out = pipe.panorama("c", 20 * f, **options)
    assert np.array_equal(out[:, :L], given)
    tokens = pipe.panorama_tokens("c", 20 * f, **options)  # its first 6 tokens are the given image's
    decoded = np.concatenate([p for _, p in pipe.decode_tiles(tokens)], axis=1)
    assert np.array_equal(out[:, L + SEAM_BLEND:], decoded[:, L + SEAM_BLEND:])  # continuation: as decoded
    assert np.array_equal(out[:, L:L + SEAM_BLEND], join(np.concatenate([given, decoded[:, L:]], 1), L,
                                                         SEAM_BLEND)[:, L:L + SEAM_BLEND])
    unblended = pipe.panorama("c", 20 * f, blend=0, **options)
    assert np.array_equal(unblended[:, L:], decoded[:, L:])


def test_join_cross_fades_the_last_given_column():
    canvas = np.zeros((2, 10, 3), np.uint8)
    canvas[:, :5] = 200
    join(canvas, 5, 4)
    assert canvas[0, :, 0].tolist() == [200] * 5 + [160, 120, 80, 40, 0]
    assert join(canvas.copy(), 5, 0).tolist() == canvas.tolist()


def test_the_left_image_must_fit(pipe):
    f = pipe.token_width
    with pytest.raises(EqgenError, match="multiple of 4 px"):
        pipe.panorama("a", 20 * f, left=torch.zeros(3, pipe.height, 5 * f + 1), progress=False)
    with pytest.raises(EqgenError, match="narrower than the panorama"):
        pipe.panorama("a", 20 * f, left=torch.zeros(3, pipe.height, 20 * f), progress=False)


def test_fit_image_resizes_to_the_height_and_crops_the_width():
    photo = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
    assert fit_image(photo, 64, 8).shape == (64, 80, 3)        # 85.3 px wide at 64 px, cropped to 80
    assert np.array_equal(fit_image(photo[:64, :72], 64, 8), photo[:64, :72])  # fits already: unchanged
    assert np.array_equal(fit_image(photo[:64, :75], 64, 8), photo[:64, :72])  # cropped on the right


def test_from_uint8_takes_read_only_arrays_without_a_warning():
    pixels = np.asarray(Image.fromarray(render("coast", 16, 8)))  # a read-only view of the PIL image
    assert not pixels.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images = from_uint8(pixels)
    assert images.shape == (3, 8, 16) and torch.equal(images, from_uint8(pixels.copy()))


def test_panorama_cli_fits_and_keeps_the_left_image_without_warnings(pipe, tmp_path, capsys):
    pipe.save_pretrained(tmp_path / "model")
    photo = render("alpine", 4 * 41, 4 * pipe.height, seed=2)  # 164x64 JPEG: 41x16 px at the model's height
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    args = ["panorama", "--model", str(tmp_path / "model"), "--class", "a", "--width", "80", "--steps", "2",
            "--left", str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "out.png")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(args) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("eqgen")]  # not tqdm's
    assert notes == [f"eqgen: {tmp_path / 'photo.jpg'} is 164x64 px; using 40x16 (resized to the model's height "
                    f"keeping its aspect, width cropped on the right to a multiple of 4 px)"]
    out = np.array(Image.open(tmp_path / "out.png"))
    assert out.shape == (pipe.height, 80, 3)
    assert np.array_equal(out[:, :40], fit_image(load_image(tmp_path / "photo.jpg"), pipe.height, 4))


def test_panorama_token_phase_memory_does_not_grow_with_width(pipe):
    """What the token phase holds besides the tokens themselves is the windowed cache: the same size for a
    1× and an 8× wide panorama."""
    sizes = []
    for tokens in (8, 64):
        sampler = pipe.sampler("a", tokens, steps=1)
        for _ in range(tokens):
            sampler.step()
        sizes.append(sampler.cache_nbytes())
    assert sizes[0] == sizes[1] > 0


@pytest.mark.slow
def test_compiled_flow_head_samples_like_the_eager_one(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    compiled = Pipeline.from_pretrained(tmp_path / "p").compile()
    torch.testing.assert_close(compiled.generate(["a", "c"], 5, steps=3, seed=4),
                               pipe.generate(["a", "c"], 5, steps=3, seed=4), atol=1e-4, rtol=0)

"""Pipeline: save/load, generation, tiled decoding, panoramas and outpainting on tiny random models."""
import json

import numpy as np
import pytest
import torch
from conftest import save_flat_pipeline

from eqgen import ColumnTokenizer, EquivariantGenerator, Pipeline
from eqgen.errors import EqgenError
from eqgen.pipeline import load_tokenizer

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

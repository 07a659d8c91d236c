"""The shipped model: it loads with no arguments, has the expected shapes, and its samples look like their
classes (checked on colour statistics that random or broken weights do not reproduce)."""
import numpy as np
import pytest
import torch

from eqgen import Pipeline
from eqgen.data.landscapes import CLASSES, render_batch
from eqgen.imageio import from_uint8, to_uint8
from eqgen.pipeline import BUILTIN

pytestmark = pytest.mark.skipif(not (BUILTIN / "config.json").exists(), reason="no built-in model in this checkout")


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained()


def test_loads_with_the_landscape_classes(pipe):
    assert pipe.classes == list(CLASSES)
    assert pipe.height == 64 and pipe.token_width == 8


def test_its_weights_load_bit_for_bit_under_todays_names(pipe):
    """The shipped file keeps its float16 weights under the names of the release (`fake_latent`, `attn2.qkv`):
    loading renames them and changes no value."""
    from safetensors.torch import load_file

    shipped = load_file(BUILTIN / "generator.safetensors")
    assert "fake_latent" in shipped and "blocks.0.attn2.qkv.weight" in shipped
    assert all(v.dtype == torch.float16 for v in shipped.values())
    loaded = pipe.generator.state_dict()
    assert torch.equal(loaded["null_class"].half(), shipped["fake_latent"])
    assert torch.equal(loaded["blocks.5.attn2.q.weight"].half(), shipped["blocks.5.attn2.qkv.weight"])
    assert len(loaded) == len(shipped)


@torch.no_grad()
def test_samples_look_like_their_classes(pipe):
    """Night scenes are dark, deserts are warm (red over blue), alpine and coast skies are blue on top."""
    night, desert, coast = (pipe.generate([c] * 4, 16, steps=10, seed=1) for c in ("night", "desert", "coast"))
    brightness = lambda x: (x.mean() + 1) / 2  # noqa: E731
    assert brightness(night) < 0.3 < brightness(desert)
    assert desert[:, 0].mean() > desert[:, 2].mean() + 0.1           # red > blue
    top = coast[:, :, : pipe.height // 4]
    assert top[:, 2].mean() > top[:, 0].mean()                       # sky: blue > red
    assert night.shape == (4, 3, 64, 128)
    assert torch.equal(night, pipe.generate(["night"] * 4, 16, steps=10, seed=1))  # a seed fixes the images
    assert not torch.equal(night[0], night[1])                       # one seed, four different images


@torch.no_grad()
def test_samples_are_class_distinct_under_the_shipped_classifier(pipe):
    from eqgen.evaluation.classifier import LandscapeClassifier

    classifier = LandscapeClassifier.from_pretrained()
    labels = torch.arange(len(pipe.classes)).repeat_interleave(3)
    images = pipe.generate(labels.tolist(), 16, steps=10, seed=3)
    accuracy = (classifier(images).argmax(1) == labels).float().mean()
    assert accuracy >= 0.9


def test_landscape_scores_of_the_built_in_model(pipe):
    from eqgen.evaluation.scores import landscape_scores

    scores = landscape_scores(pipe, per_class=4, steps=5)
    assert scores["class_accuracy"] >= 0.9
    assert 0 <= scores["landscape_precision"] <= 1 and 0 <= scores["landscape_recall"] <= 1
    assert scores["landscape_fid"] >= 0 and 1 <= scores["landscape_is"] <= 8
    # As close to the renders as a second set of renders is (measured: 0.6× that floor), and most samples
    # inside the renders' manifold and most renders inside the samples' (measured: 0.91, 0.97).
    assert scores["landscape_fid"] < 1.5 * scores["reference_fid_real_vs_real"]
    assert scores["landscape_precision"] >= 0.75 and scores["landscape_recall"] >= 0.75
    assert scores["landscape_is"] >= 7  # of 8: confident and spread over the classes


def test_the_default_solver_beats_the_papers_100_euler_steps_on_the_shipped_model(pipe):
    from eqgen.evaluation.solvers import solver_errors
    from eqgen.sampling import SamplingOptions

    default = SamplingOptions()
    paper, ours = solver_errors(pipe, [("euler", 100, 1.0), (default.solver, default.steps, default.rho)],
                                cfg=default.cfg, per_class=1, tokens=8)
    assert ours["evaluations"] <= 25 < paper["evaluations"]
    assert ours["error"] <= paper["error"]


def test_per_class_fids_of_the_built_in_model(pipe):
    from eqgen.evaluation.scores import class_fids

    fids = class_fids(pipe, per_class=4, steps=5)
    assert list(fids) == pipe.classes
    assert all(fid >= 0 and floor >= 0 for fid, floor in fids.values())
    # Each class's samples are about as close to its renders as other renders of it are (measured: at most
    # 1.5× that floor); renders of two different classes are 200 or more apart at this sample size.
    assert all(fid < 2 * floor + 1 for fid, floor in fids.values()), fids


@torch.no_grad()
def test_tiled_decoding_of_the_shipped_tokenizer_matches_a_whole_decode(pipe):
    """Tiles of 16 tokens overlapping by 4, cross-faded, against one decode of all 40 tokens of a render of
    every class: the seams stay within a few levels (measured: mean 0.06-1.4, largest 19 of 255); tiles
    butted together without the cross-fade miss by up to 177."""
    tokens = pipe.encode(from_uint8(render_batch(list(CLASSES), [3] * len(CLASSES), 40 * pipe.token_width, 64)))
    errors = []
    for row in tokens.split(1):
        whole = to_uint8(pipe.decode(row)[0]).astype(np.int16)
        tiled = np.concatenate([piece for _, piece in pipe.decode_tiles(row, tile=16, overlap=4)], axis=1)
        errors.append(np.abs(tiled.astype(np.int16) - whole))
    assert max(e.mean() for e in errors) < 2.5 and np.mean(errors) < 1.0
    assert max(e.max() for e in errors) <= 40

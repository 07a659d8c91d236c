"""The shipped model: it loads with no arguments, has the expected shapes, and its samples look like their
classes (checked on colour statistics that random or broken weights do not reproduce)."""
import pytest
import torch

from eqgen import Pipeline
from eqgen.data.landscapes import CLASSES
from eqgen.pipeline import BUILTIN

pytestmark = pytest.mark.skipif(not (BUILTIN / "config.json").exists(), reason="no built-in model in this checkout")


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained()


def test_loads_with_the_landscape_classes(pipe):
    assert pipe.classes == list(CLASSES)
    assert pipe.height == 64 and pipe.token_width == 8


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


def test_the_default_solver_beats_the_papers_100_euler_steps_on_the_shipped_model(pipe):
    from eqgen.evaluation.solvers import solver_errors
    from eqgen.pipeline import DEFAULTS

    paper, ours = solver_errors(pipe, [("euler", 100, 1.0), (DEFAULTS["solver"], DEFAULTS["steps"], DEFAULTS["rho"])],
                                cfg=DEFAULTS["cfg"], per_class=1, tokens=8)
    assert ours["evaluations"] <= 25 < paper["evaluations"]
    assert ours["error"] <= paper["error"]


def test_per_class_fids_of_the_built_in_model(pipe):
    from eqgen.evaluation.scores import class_fids

    fids = class_fids(pipe, per_class=4, steps=5)
    assert list(fids) == pipe.classes
    assert all(fid >= 0 and floor >= 0 for fid, floor in fids.values())

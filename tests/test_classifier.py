"""The shipped landscape classifier: right on fresh renders, and not fooled into a spread by noise."""
import torch

from eqgen.data.landscapes import iterate_landscapes
from eqgen.evaluation.classifier import LandscapeClassifier


@torch.no_grad()
def test_shipped_classifier_on_fresh_renders_any_width():
    classifier = LandscapeClassifier.from_pretrained()
    for width in (64, 256):
        images, labels = next(iterate_landscapes(64, 64, width, seed=123_457))
        assert (classifier(images).argmax(1) == labels).float().mean() >= 0.95
    assert classifier.features(images).shape == (64, classifier.config.feature_dim)

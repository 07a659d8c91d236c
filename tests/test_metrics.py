"""Metrics against independent computations."""
import numpy as np
import pytest
import torch
from scipy import linalg

from eqgen.errors import EqgenError
from eqgen.evaluation.metrics import fid_from_features, frechet_distance, inception_score, precision_recall


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert abs(fid_from_features(x, x)) < 1e-6


def test_fid_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(1)
    d = 6
    a = rng.normal(size=(d, d))
    s1, s2 = a @ a.T + np.eye(d), np.diag(rng.uniform(0.5, 2, d))
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # Independent: Tr((Σ1Σ2)^½) via the symmetric form Σ2^½ Σ1 Σ2^½, whose square root is real.
    r = linalg.sqrtm(s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(r @ s1 @ r).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # A shifted copy: the distance is the squared shift.
    x = rng.normal(size=(20000, 3))
    assert fid_from_features(x, x + np.array([1.0, 2.0, 0.0])) == pytest.approx(5.0, rel=1e-3)


def test_inception_score_bounds():
    confident = torch.eye(10).repeat(5, 1) * 50  # every class equally often, each image certain
    assert inception_score(confident)[0] == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.zeros(40, 10))[0] == pytest.approx(1.0)


def test_precision_recall():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 2))
    assert precision_recall(real, rng.normal(size=(400, 2))) == pytest.approx((1.0, 1.0), abs=0.05)
    far = rng.normal(size=(400, 2)) + 20
    assert precision_recall(real, far) == (0.0, 0.0)
    collapsed = real[:5].repeat(80, axis=0) + 1e-3  # mode collapse: precise, no recall
    p, r = precision_recall(real, collapsed)
    assert p > 0.95 and r < 0.2
    with pytest.raises(EqgenError):
        precision_recall(real[:2], real[:2])

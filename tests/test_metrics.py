"""Metrics against independent computations."""
import numpy as np
import pytest
import torch
from scipy import linalg

from eqgen.errors import EqgenError
from eqgen.evaluation.metrics import detail_ratio, fid_from_features, frechet_distance, inception_score, precision_recall

# The standard FID Inception weights exist as TorchScript, which torch now marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


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


class _TinyInception(torch.nn.Module):
    """The interface of the TorchScript FID Inception (uint8 in, return_features=True gives [N, D]), small and
    randomly initialised."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x.float() / 127.5 - 1, size=(32, 32), mode="bilinear")
        features = self.conv(x).mean(dim=(2, 3))
        return features if return_features else features.softmax(-1)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "inception.pt"
    torch.jit.script(_TinyInception()).save(str(path))
    return path


def test_inception_features_from_a_torchscript_file(inception_file, tmp_path):
    from eqgen.errors import EqgenError
    from eqgen.evaluation.inception import InceptionFeatures

    extract = InceptionFeatures(inception_file)
    images = torch.rand(5, 3, 16, 40) * 2 - 1
    expected = torch.jit.load(str(inception_file))(((images + 1) * 127.5).round().to(torch.uint8), return_features=True)
    torch.testing.assert_close(extract(images, batch=2), expected)
    with pytest.raises(EqgenError, match="no Inception weights"):
        InceptionFeatures(tmp_path / "missing.pt")
    with pytest.raises(EqgenError, match="no_output_bias"):   # a network without the IS interface says so
        extract.probabilities(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(EqgenError, match="not a TorchScript Inception network"):
        InceptionFeatures(tmp_path / "bad.pt")


def test_detail_ratio_sees_blur_and_invented_texture():
    from eqgen.data.landscapes import render_batch
    from eqgen.imageio import from_uint8

    images = from_uint8(render_batch([1, 2, 6], [0, 1, 2], 128, 64))
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(images, (2, 2, 2, 2), mode="reflect"), 5, 1)
    noisy = images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    assert detail_ratio(images, images) == pytest.approx(1.0)
    assert detail_ratio(images, blurred) < 0.6 < 1.5 < detail_ratio(images, noisy)
    assert detail_ratio(images, torch.zeros_like(images)) == 0.0


def test_eval_tokenizer_prints_psnr_and_rfids(inception_file, capsys, tmp_path):
    from PIL import Image

    from eqgen.cli import main

    assert main(["eval", "tokenizer", "-n", "16", "--inception", str(inception_file),
                 "--png", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    scores = dict(line.split() for line in out if not line.startswith("wrote"))
    assert 20 < float(scores["psnr"]) < 40 and 0 < float(scores["detail_ratio"]) < 2
    assert Image.open(tmp_path / "r.png").size[1] > 16 * 64   # 8 originals and 8 reconstructions, 64 px tall
    assert float(scores["landscape_rfid"]) >= 0 and float(scores["inception_rfid"]) >= 0


def test_tokenizer_rfid_is_zero_for_a_perfect_reconstruction():
    from eqgen.evaluation.scores import tokenizer_scores

    class Identity(torch.nn.Module):   # a "tokenizer" that reconstructs exactly
        config = type("C", (), {"height": 32})()
        token_width = 8

        def encode(self, x):
            return x

        def decode(self, x):
            return x

    scores = tokenizer_scores(Identity(), n=24, width_tokens=4)
    assert scores["psnr"] > 90 and abs(scores["landscape_rfid"]) < 1e-3 and scores["detail_ratio"] == pytest.approx(1)

"""`eqgen eval fid`: each formula against an independent computation, the image sets, the statistics files, and
the command's one-line errors."""
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from eqgen.cli import main
from eqgen.data.landscapes import render
from eqgen.errors import EqgenError
from eqgen.evaluation.fid import Statistics, extract
from eqgen.evaluation.image_sets import FolderImages, NpzImages, adm_center_crop, open_images
from eqgen.evaluation.inception import InceptionFeatures
from eqgen.evaluation.metrics import feature_stats, frechet_distance, inception_score, precision_recall
from eqgen.evaluation.sample_dir import write_npz
from eqgen.evaluation.stand_in import save_stand_in

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def _correlated(rng, n, d, shift=0.0):
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return np.abs(rng.normal(size=(n, d)) @ mixing + shift)   # non-negative, like Inception's pool features


def _fid_with_sqrtm(a, b):
    """FID as pytorch-fid / the ADM evaluator compute it: scipy's sqrtm of the product of the covariances."""
    (mu1, s1), (mu2, s2) = feature_stats(a), feature_stats(b)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))


@pytest.mark.parametrize("n", [2000, 40])   # 40 < 64 dimensions: singular covariances
def test_fid_agrees_with_scipy_sqrtm(n):
    rng = np.random.default_rng(n)
    a, b = _correlated(rng, n, 64), _correlated(rng, n, 64, shift=0.3)
    ours, theirs = frechet_distance(*feature_stats(a), *feature_stats(b)), _fid_with_sqrtm(a, b)
    print(f"FID n={n}: eqgen {ours:.12f}, scipy sqrtm {theirs:.12f}, difference {ours - theirs:.2e}")
    assert ours == pytest.approx(theirs, rel=1e-9 if n > 64 else 1e-6)
    with pytest.raises(EqgenError, match="another feature network"):
        frechet_distance(*feature_stats(a), *feature_stats(b[:, :32]))


def _is_by_definition(probabilities, splits, permutation=None):
    """exp(E_x KL(p(y|x) || p(y))) per part, averaged: the definition, in numpy."""
    p = probabilities if permutation is None else probabilities[permutation]
    n, scores = len(p), []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(axis=0)
        scores.append(np.exp(np.mean([np.sum(q * np.log(q / marginal)) for q in part])))
    return np.mean(scores), np.std(scores)


def test_inception_score_agrees_with_its_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1003, 40)) * 3   # 1003: parts of unequal size
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for shuffle in (None, 2020):   # ADM: parts in file order; torch-fidelity: after RandomState(2020)'s permutation
        permutation = None if shuffle is None else np.random.RandomState(shuffle).permutation(len(p))
        ours, theirs = inception_score(logits, 10, shuffle), _is_by_definition(p, 10, permutation)
        print(f"IS shuffle={shuffle}: eqgen {ours[0]:.12f} ± {ours[1]:.6f}, definition {theirs[0]:.12f}, "
              f"difference {ours[0] - theirs[0]:.2e}")
        assert ours[0] == pytest.approx(theirs[0], rel=1e-12) and ours[1] == pytest.approx(theirs[1], rel=1e-9)
    # Log-probabilities give the same score as logits: how the network's probabilities are passed in.
    assert inception_score(np.log(p), 10)[0] == pytest.approx(inception_score(logits, 10)[0], rel=1e-12)


def _pr_brute_force(real, fake, k=3):
    """ADM's definition with a full distance matrix: a point is inside a set's manifold when it is within the
    k-th nearest-neighbour distance (counting the point itself) of some member."""
    def inside(support, queries):
        within = np.linalg.norm(support[:, None] - support[None], axis=2)
        radii = np.sort(within, axis=1)[:, k]
        return np.mean((np.linalg.norm(queries[:, None] - support[None], axis=2) <= radii[None]).any(axis=1))
    return inside(real, fake), inside(fake, real)


def test_precision_recall_agrees_with_brute_force_knn():
    rng = np.random.default_rng(3)
    real, fake = _correlated(rng, 300, 16), _correlated(rng, 200, 16, shift=0.4)
    expected = _pr_brute_force(real, fake)
    for rows in (None, 7):   # in one block, and in blocks of 7 query rows
        got = precision_recall(real, fake, rows=rows)
        print(f"precision/recall rows={rows}: eqgen {got}, brute force {expected}")
        assert got == expected
    assert 0.1 < expected[0] < 0.9 and 0.1 < expected[1] < 0.9   # a case where the definition matters


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    return InceptionFeatures(save_stand_in(tmp_path_factory.mktemp("net") / "stand_in.pt", features=32))


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """16 landscape renders (64x96) in two class folders, JPEG and PNG."""
    root = tmp_path_factory.mktemp("renders")
    for i in range(16):
        folder = root / ("alpine" if i < 8 else "coast")
        folder.mkdir(exist_ok=True)
        Image.fromarray(render(folder.name, 96, 64, i)).save(folder / f"{i:02d}.{'jpg' if i % 2 else 'png'}")
    return root


def test_streamed_statistics_equal_numpy_on_all_features(network, renders):
    images = FolderImages(renders)
    stats = extract(images, network, batch=5, keep=6, progress=False)
    pixels = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in images.files]))
    features = network.features(pixels.permute(0, 3, 1, 2)).double().numpy()
    np.testing.assert_allclose(stats.mu, features.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats.sigma, np.cov(features, rowvar=False), rtol=1e-7, atol=1e-10)
    assert stats.count == 16 and stats.size == (64, 96) and len(stats.features) == 6
    chosen = np.sort(np.random.default_rng(0).choice(16, 6, replace=False))   # the kept ones: a fixed random choice
    np.testing.assert_allclose(stats.features, features[chosen], rtol=1e-6)


def test_adm_centre_crop():
    # Twice the target both ways: one 2x2 box halving, then nothing to resize.
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    halved = image.reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(adm_center_crop(Image.fromarray(image), 4, 4), halved, atol=1)  # Pillow rounds up
    # A wide image and a square target: the short side fits, the centre is kept.
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 100:200] = 255
    crop = adm_center_crop(Image.fromarray(wide), 50, 50)
    assert crop.shape == (50, 50, 3) and crop[:, 2:-2].min() == 255
    # A wide target keeps the full height of a square image, and its centre rows.
    assert adm_center_crop(Image.fromarray(image), 2, 8).shape == (2, 8, 3)


def test_npz_images_are_read_in_slices(tmp_path, renders):
    arr = np.random.default_rng(1).integers(0, 256, (9, 4, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", arr)
    images = NpzImages(tmp_path / "a.npz")
    got = list(images.batches(3, 8, 2))
    np.testing.assert_array_equal(np.concatenate([b.pixels for b in got]), arr[3:8])
    assert np.concatenate([b.index for b in got]).tolist() == [3, 4, 5, 6, 7]
    # eqgen's own sample file: readable by numpy and by the reader, labels beside their images.
    files = FolderImages(renders).files
    write_npz(tmp_path / "s.npz", files, list(range(16)))
    with np.load(tmp_path / "s.npz") as data:
        order = data["arr_1"]
        assert sorted(order) == list(range(16)) and list(order) != list(range(16))   # shuffled
        np.testing.assert_array_equal(data["arr_0"][3], np.asarray(Image.open(files[order[3]]).convert("RGB")))
    with pytest.raises(EqgenError, match="uint8"):
        np.savez(tmp_path / "f.npz", arr.astype(np.float32))
        NpzImages(tmp_path / "f.npz")
    with pytest.raises(EqgenError, match="one size"):
        open_images(tmp_path / "a.npz", size=(8, 8))


def test_statistics_files_round_trip_and_guard_their_network(network, renders, tmp_path):
    stats = extract(FolderImages(renders), network, keep=None, pixel_stats=True, progress=False)
    stats.network = network.fingerprint()
    loaded = Statistics.load(stats.save(tmp_path / "ref.npz"))
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.size == (64, 96) and loaded.count == 16 and loaded.seam == pytest.approx(stats.seam)
    np.testing.assert_array_equal(loaded.features, stats.features)
    np.savez(tmp_path / "junk.npz", something=np.zeros(3))
    with pytest.raises(EqgenError, match="neither images"):
        Statistics.load(tmp_path / "junk.npz")


def _scores(capsys):
    lines = capsys.readouterr().out.splitlines()
    return {k: float(v) for k, v in (line.split() for line in lines if not line.startswith("wrote"))}


def test_eval_fid_from_folders_npz_and_saved_statistics(network, renders, tmp_path, capsys):
    """Renders against renders of the same classes from other seeds: a small FID; the samples' npz and the
    saved statistics give the same numbers as the folders."""
    samples = tmp_path / "samples"
    for i in range(12):
        (samples / "x").mkdir(parents=True, exist_ok=True)
        Image.fromarray(render("alpine" if i % 2 else "coast", 96, 64, 100 + i)).save(samples / "x" / f"{i}.png")
    write_npz(tmp_path / "samples.npz", FolderImages(samples).files, [0] * 12)
    common = ["--inception", str(network.path), "--workers", "0", "--device", "cpu"]
    assert main(["eval", "fid", str(samples), str(renders), "--save-stats", str(tmp_path / "ref.npz")] + common) == 0
    first = _scores(capsys)
    assert first["samples"] == 12 and first["reference_images"] == 16
    assert first["fid"] >= 0 and first["is"] >= 1 and 0 <= first["precision"] <= 1 and 0 <= first["recall"] <= 1
    assert main(["eval", "fid", str(tmp_path / "samples.npz"), str(tmp_path / "ref.npz")] + common) == 0
    again = _scores(capsys)
    for key in ("fid", "precision", "recall"):   # IS depends on the images' order: its parts differ
        assert again[key] == pytest.approx(first[key], rel=1e-6), key
    # Statistics carry their network and size: another network, or samples of another size, is refused.
    other = save_stand_in(tmp_path / "other.pt", features=32, seed=1)
    assert main(["eval", "fid", str(samples), str(tmp_path / "ref.npz"), "--inception", str(other), "--workers", "0",
                 "--device", "cpu"]) == 2
    assert "another feature network" in capsys.readouterr().err


@pytest.mark.parametrize("reference, message", [("missing", "not found"), ("bad.npz", "neither an image folder"),
                                                ("empty", "no image files")])
def test_eval_fid_errors_are_one_line(network, renders, tmp_path, capsys, reference, message):
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    (tmp_path / "empty").mkdir()
    code = main(["eval", "fid", str(renders), str(tmp_path / reference), "--inception", str(network.path),
                 "--workers", "0", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and err[-1].startswith("eqgen: error: ")

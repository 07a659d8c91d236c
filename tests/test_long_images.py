"""Long-image fidelity: flat for ground truth itself, and it catches drift, blur and seams."""
import numpy as np

from eqgen.errors import EqgenError
from eqgen.evaluation.long_images import drift_summary, drift_table, ground_truth, offset_stats


def test_ground_truth_against_itself_is_flat_and_drift_is_caught():
    truth = ground_truth("alpine", 24, 512, 32)
    other = ground_truth("alpine", 24, 512, 32, seed=5)  # fresh renders: the same distribution
    rows = drift_table(offset_stats(other, 64), offset_stats(truth, 64))
    assert all(r["colour_z"] < 0.8 and 0.8 < r["texture_ratio"] < 1.25 for r in rows)

    ramp = np.clip(other.astype(float) + np.linspace(0, 120, 512)[None, None, :, None], 0, 255).astype(np.uint8)
    drifted = drift_table(offset_stats(ramp, 64), offset_stats(truth, 64))
    assert drifted[-1]["colour_z"] > 3 * max(drifted[0]["colour_z"], 0.2)
    early, late = drift_summary(drifted)["colour_z"]
    assert late > 3 * max(early, 0.2)
    early, late = drift_summary(rows)["texture_ratio"]
    assert abs(late - early) < 0.2

    blurred = ((other.astype(float) + np.roll(other, 1, axis=2) + np.roll(other, -1, axis=2)) / 3).astype(np.uint8)
    assert np.mean([r["texture_ratio"] for r in drift_table(offset_stats(blurred, 64), offset_stats(truth, 64))]) < 0.8

    seamed = other.copy()
    seamed[:, :, 288:] = np.clip(seamed[:, :, 288:].astype(int) + 60, 0, 255)  # a step inside window 256..319
    rows = drift_table(offset_stats(seamed, 64), offset_stats(truth, 64))
    assert rows[4]["seam_ratio"] > 2 * rows[1]["seam_ratio"]


def test_crop_fid_per_offset_band_is_flat_for_real_images_and_rises_with_degradation(tmp_path):
    """The score for models trained on real photos: windows of wide images against real images of the window's
    size. Wide renders (stationary along x) score alike in every band; noise growing with the offset raises the
    crop-FID of the later bands, and steps between columns raise their seam ratio."""
    import pytest

    from eqgen.evaluation.fid import long_image_scores
    from eqgen.evaluation.stand_in import save_stand_in
    from eqgen.imageio import save_png

    network = save_stand_in(tmp_path / "stand_in.pt", features=16)
    for i, image in enumerate(ground_truth("alpine", 48, 64, 32, seed=7)):
        save_png(image, tmp_path / "reference" / f"{i:02d}.png")
    wide = ground_truth("alpine", 12, 512, 32, seed=99)
    np.savez(tmp_path / "real.npz", wide)
    noisy = wide + np.random.default_rng(0).normal(size=wide.shape) * np.linspace(0, 90, 512)[None, None, :, None]
    noisy[:, :, 400:] += 50 * (np.arange(112) % 16 < 8)[None, None, :, None]   # steps every 8 columns, band 4
    np.savez(tmp_path / "degraded.npz", np.clip(noisy, 0, 255).astype(np.uint8))

    def scores(name):
        return long_image_scores(tmp_path / name, tmp_path / "reference", network, window=64, bands=4, device="cpu",
                                 batch=16, progress=False)

    real, degraded = scores("real.npz"), scores("degraded.npz")
    print("real:", real, "\ndegraded:", degraded)
    assert [r["first_px"] for r in real] == [0, 128, 256, 384] and all(r["crops"] == 24 for r in real)
    fids = [r["crop_fid"] for r in real]
    assert max(fids) < 2 * min(fids) + 1e-3 and all(0.8 < r["seam_ratio"] < 1.25 for r in real), real
    assert degraded[-1]["crop_fid"] > 5 * degraded[0]["crop_fid"] and degraded[-1]["crop_fid"] > 5 * max(fids)
    assert degraded[-1]["seam_ratio"] > 2 * degraded[0]["seam_ratio"]
    with pytest.raises(EqgenError, match="fewer than 4 bands"):
        long_image_scores(tmp_path / "real.npz", tmp_path / "reference", network, window=192, device="cpu",
                          progress=False)

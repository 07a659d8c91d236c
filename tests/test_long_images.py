"""Long-image fidelity: flat for ground truth itself, and it catches drift, blur and seams."""
import numpy as np

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

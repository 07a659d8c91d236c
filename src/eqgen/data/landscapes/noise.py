"""Counter-based randomness: any cell, column, parameter or pixel is drawn from a hash of (key, its indices),
independently of every other, so a chunk of a scene never needs its neighbours; and 1-D value noise on it."""
from __future__ import annotations

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: consecutive multiples are far apart in every bit


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 whose outputs look independent for nearby inputs."""
    with np.errstate(over="ignore"):  # wrapping multiplication is the point
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def hashed(key: np.ndarray, *indices) -> np.ndarray:
    h = key
    for index in indices:
        h = mix(h ^ np.asarray(index, dtype=np.int64).view(np.uint64))
    return h


def hashed_uniform(key: np.ndarray, *indices) -> np.ndarray:
    """Uniform floats in [0, 1), one per broadcast element of (key, *indices)."""
    return (hashed(key, *indices) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def derive_seeds(seed: int, *indices) -> np.ndarray:
    """Independent uint64 image seeds for derived streams, e.g. (seed, step, position in batch)."""
    return hashed(np.asarray(seed % 2 ** 64, dtype=np.uint64), *indices)


def value_noise(key: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Catmull-Rom interpolation of hashed lattice values in [-1, 1]: smooth, no flat spots at the knots."""
    i = np.floor(t)
    f = t - i
    i = i.astype(np.int64)
    p0, p1, p2, p3 = (2 * hashed_uniform(key, i + d) - 1 for d in (-1, 0, 1, 2))
    return p1 + 0.5 * f * (p2 - p0 + f * (2 * p0 - 5 * p1 + 4 * p2 - p3 + f * (3 * (p1 - p2) + p3 - p0)))

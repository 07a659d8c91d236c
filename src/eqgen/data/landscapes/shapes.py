"""Object shapes for `Scene.objects`: (dx, dy from the base, height, r in [0,1), scene) -> [(alpha, lighting
or None)]. Lighting None means "paint the accent colour" (trunks); otherwise it multiplies the object colour."""
from __future__ import annotations

import numpy as np

from .scene import F32, clip01


def _cover(distance_inside, px):
    return clip01(distance_inside / px + 0.5)


def _side_light(dx, width, scene, amount=0.25):
    return 1 + amount * np.clip(dx / width, -1, 1) * np.asarray(scene.light, F32)[:, None, None]


def conifer(dx, dy, h, r, s):
    w = h * (0.2 + 0.12 * r)
    crown = h * 0.88
    v = (dy + crown) / crown  # 0 at the tip, 1 at the lowest branches
    tiers = 0.72 + 0.28 * (v * (3 + (r * 3).astype(np.int64)) % 1)
    alpha = _cover(w * v * tiers - np.abs(dx), s.px) * _cover(-dy - 0.1 * h, s.px) * (v > 0)
    trunk = _cover(np.maximum(0.05 * w, 0.35 * s.px) - np.abs(dx), s.px) * _cover(-dy, s.px) * (dy > -0.2 * h)
    return [(trunk, None), (alpha, _side_light(dx, w, s) * (0.85 + 0.3 * v))]


_CROWN = [(0.0, 0.0, 1.0), (-0.55, 0.25, 0.7), (0.55, 0.2, 0.72), (0.1, -0.45, 0.7)]  # (x, y, size) of puffs


def _puffs(dx, cy, a, b, px):
    """Coverage of a leafy crown centred at (0, cy = 0): a few overlapping ellipses of radii (a, b)."""
    inside = [1 - np.sqrt(((dx - ox * a) / (k * a)) ** 2 + ((cy - oy * b) / (k * b)) ** 2) for ox, oy, k in _CROWN]
    return _cover(np.maximum.reduce(inside) * b, px)


def broadleaf(dx, dy, h, r, s):
    a, b = h * (0.3 + 0.12 * r), h * 0.3
    cy = dy + 0.62 * h
    trunk = _cover(np.maximum(0.06 * a, 0.35 * s.px) - np.abs(dx), s.px) * _cover(-dy, s.px) * (cy > 0)
    lit = _side_light(dx, a, s) * (1.1 - 0.25 * np.clip(cy / b, -1, 1))
    return [(trunk, None), (_puffs(dx, cy, a, b, s.px), lit)]


def acacia(dx, dy, h, r, s):
    a, cy = h * (0.55 + 0.25 * r), dy + 0.85 * h  # canopy half-width, height above the canopy's underside
    thick = np.where(cy < 0, 0.16 * h, 0.04 * h)  # a flat-bottomed umbrella
    canopy = _cover((1 - np.sqrt((dx / a) ** 2 + (cy / thick) ** 2)) * thick, s.px)
    fork = 0.45 * h  # trunk splits into two limbs this far above the ground
    spread = np.clip((-dy - fork) / (0.85 * h - fork), 0, 1) * 0.45 * a
    limb = np.minimum(np.abs(dx - spread), np.abs(dx + spread))
    trunk = _cover(np.maximum(0.025 * h, 0.35 * s.px) - limb, s.px) * _cover(-dy, s.px) * (cy > -0.05 * h)
    return [(trunk, None), (canopy, _side_light(dx, a, s, 0.15) * (1.1 - 0.3 * clip01(cy / thick + 1)))]


def rock(dx, dy, h, r, s):
    a = h * (0.8 + 0.8 * r)
    inside = 1 - np.sqrt((dx / a) ** 2 + (dy / h) ** 2)
    alpha = _cover(inside * h, s.px) * _cover(-dy + 0.02 * h, s.px)
    return [(alpha, _side_light(dx, a, s, 0.35) * (1.15 - 0.45 * clip01(1 + dy / h)))]


def bush(dx, dy, h, r, s):
    a, b = h * (0.8 + 0.5 * r), 0.45 * h
    cy = dy + 0.5 * h
    return [(_puffs(dx, cy, a, b, s.px), _side_light(dx, a, s) * (1.15 - 0.3 * clip01(cy / b + 0.5)))]


_HEAP = [(0.0, 0.55, 0.55), (-0.7, 0.35, 0.4), (0.75, 0.3, 0.42), (-0.3, 0.8, 0.38), (0.35, 0.75, 0.4),
         (-1.2, 0.2, 0.25), (1.25, 0.2, 0.27)]  # (x, height, radius) of a cumulus' puffs, in cloud heights


def cloud(dx, dy, h, r, s):
    w = h * (0.9 + 0.5 * r)  # stretch sideways
    inside = np.maximum.reduce([k * h - np.sqrt(((dx - ox * w) * h / w) ** 2 + (dy + oy * h) ** 2)
                                for ox, oy, k in _HEAP])
    alpha = _cover(inside, s.px) * _cover(-dy, s.px)  # cut flat at the base
    return [(alpha, 1.05 - 0.35 * clip01(1 + dy / (0.6 * h)))]


def _segment_distance(px_, py_, ax, ay, bx, by):
    """Distance from points to the segment a-b (arrays broadcast)."""
    vx, vy = bx - ax, by - ay
    t = clip01(((px_ - ax) * vx + (py_ - ay) * vy) / (vx * vx + vy * vy))
    return np.sqrt((px_ - ax - t * vx) ** 2 + (py_ - ay - t * vy) ** 2)


def cactus(dx, dy, h, r, s):
    w = np.maximum(0.08 * h, 0.5 * s.px)
    d = _segment_distance(dx, dy, 0.0, 0.0, 0.0, -h + w)
    for side, (elbow, reach) in zip((-1, 1), ((0.45, 0.28), (0.6, 0.24))):
        ey, ex = -(elbow + 0.1 * r) * h, side * reach * h
        arm = np.minimum(_segment_distance(dx, dy, 0.0, ey, ex, ey),
                         _segment_distance(dx, dy, ex, ey, ex, ey - 0.25 * h))
        d = np.minimum(d, arm + 0.25 * w)  # arms are a little thinner than the trunk
    alpha = _cover(w - d, s.px) * _cover(-dy + w, s.px)
    return [(alpha, _side_light(dx, w * 4, s, 0.3))]

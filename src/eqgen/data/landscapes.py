"""The built-in `landscapes` dataset: procedural, class-conditional natural scenes of any width.

Every image is a pure function of (class, seed) and of the *absolute* pixel column, so a panorama can be
rendered in chunks (`x0`) and any crop of a wide render equals a narrow render at that offset.

Lengths are measured in image heights: a pixel at row i, absolute column x sits at
y = (i + 0.5) / H (0 at the top) and u = (x + 0.5) / H, so a 32 px and a 256 px render of the same seed show
the same scene. Each layer (sky, clouds, ridges, sea, trees, rocks...) is built from hashed noise on a lattice
in u, or from objects hashed per cell along u, and every noise and cell lattice is shifted by a per-image
random phase. A lattice process is only cyclostationary; the uniform random phase makes it stationary, so the
columns of a crop at any offset are distributed exactly like those of a narrow render.

A batch of seeds of one class is rendered at once: per-image parameters are [B] arrays, column profiles
[B, W], pixels [B, H, W]. Nothing ever looks at a neighbouring column, which keeps chunks seamless.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import EqgenError
from ..imageio import from_uint8

CLASSES = ("desert", "alpine", "forest", "coast", "canyon", "tundra", "night", "savanna")
MIN_HEIGHT = 8
_SLOPE_SPAN = 0.025  # heights

F32 = np.float32
Profile = Callable[[np.ndarray], np.ndarray]  # u [W] (heights) -> y [B, W] of a silhouette's top


def class_index(name: str) -> int:
    if name not in CLASSES:
        raise EqgenError(f"unknown landscape class {name!r}; choose one of: {', '.join(CLASSES)}")
    return CLASSES.index(name)


# --- hashing: counter-based randomness, so any cell, column or parameter is drawn independently -----------

_GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 whose outputs look independent for nearby inputs."""
    with np.errstate(over="ignore"):  # wrapping multiplication is the point
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _hash(key: np.ndarray, *indices) -> np.ndarray:
    h = key
    for index in indices:
        h = _mix(h ^ np.asarray(index, dtype=np.int64).view(np.uint64))
    return h


def _uniform(key: np.ndarray, *indices) -> np.ndarray:
    """Uniform floats in [0, 1), one per broadcast element of (key, *indices)."""
    return (_hash(key, *indices) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _seeds(seed: int, *indices) -> np.ndarray:
    """Independent uint64 image seeds for derived streams, e.g. (seed, step, position in batch)."""
    return _hash(np.asarray(seed % 2 ** 64, dtype=np.uint64), *indices)


def _sat(x):
    return np.clip(x, 0.0, 1.0)


# --- the scene: random streams, coordinates, and the layer primitives --------------------------------------


class _Scene:
    """A batch of images of one class under construction, painted back to front."""

    def __init__(self, seeds: np.ndarray, label: int, width: int, height: int, x0: int):
        self.key = _mix(_mix(seeds) ^ np.uint64(label + 1))  # [B]
        self.draws = 0
        self.B, self.H, self.W = len(seeds), height, width
        self.px = 1.0 / height
        self.col = np.arange(width, dtype=np.int64) + x0  # absolute pixel column
        self.u = (self.col + 0.5) / height  # [W] float64: precise far out in a panorama
        self.y = ((np.arange(height) + 0.5) / height).astype(F32)[None, :, None]  # [1, H, 1]
        self.img = np.zeros((self.B, height, width, 3), F32)
        self.light = np.where(self.uniform() < 0.5, -1.0, 1.0)  # sun from the left or the right
        self.sun_x = None  # [B, W]: centre of the nearest sun or moon, set by `sun`
        self.sun_on = None
        self._grain = None

    # random streams ------------------------------------------------------------------------------------

    def new_key(self) -> np.ndarray:
        self.draws += 1
        return _mix(self.key ^ np.uint64(self.draws * _GOLDEN % 2 ** 64))

    def uniform(self, lo=0.0, hi=1.0) -> np.ndarray:
        return lo + (hi - lo) * _uniform(self.new_key())

    def choice(self, n: int) -> np.ndarray:
        return np.minimum((self.uniform() * n).astype(np.int64), n - 1)

    def rgb(self, options, pick=None, jitter=0.05) -> np.ndarray:
        """[B, 3] colours in [0, 1]: option `pick` (or the only one) with a little per-image variation."""
        table = np.asarray(options, F32).reshape(-1, 3) / 255
        base = table[pick] if pick is not None else np.broadcast_to(table[0], (self.B, 3))
        tint = 1 + jitter * (2 * np.stack([self.uniform() for _ in range(3)], 1) - 1)
        bright = 1 + jitter * (2 * self.uniform()[:, None] - 1)
        return (base * tint * bright).astype(F32)

    def noise(self, freq: float, octaves: int = 4, gain: float = 0.5, kind: str = "smooth") -> Profile:
        """Fractal 1-D noise in u with a standard deviation of about 0.5 (so mostly in [-1, 1]) for any octaves.

        kind: smooth, or ridged (sharp crests pointing up).
        """
        freq = np.reshape(freq, (-1, 1))  # a number, or one per image
        keys = [self.new_key()[:, None] for _ in range(octaves)]
        phase = self.uniform()[:, None]
        norm = np.sqrt(sum(gain ** (2 * k) for k in range(octaves)))

        def profile(u):
            t = u * freq + phase
            total = 0.0
            for k, key in enumerate(keys):
                n = _value_noise(key, t * 2 ** k)
                if kind == "ridged":
                    n = 1 - 2 * np.abs(n)
                total = total + gain ** k * n
            return total / norm

        return profile

    def cells(self, cell: float, density, spread: int = 1):
        """A stationary point process: each cell of `cell` heights holds an object with probability `density`.

        Returns a function of u giving, for every column, the candidate objects of the 2*spread+1 nearest cells:
        centre xc, presence and a per-object uniform draw r(j) for any j, all [B, W, K].
        """
        key, phase = self.new_key()[:, None, None], self.uniform()[:, None, None]

        def at(u):
            k = np.floor(u[..., None] / cell + phase) + np.arange(-spread, spread + 1)
            k_int = k.astype(np.int64)
            present = _uniform(key, k_int, 0) < np.reshape(density, (-1, 1, 1))  # a number or one per image
            xc = (k + _uniform(key, k_int, 1) - phase) * cell
            return xc, present, lambda j: _uniform(key, k_int, j + 2)

        return at

    # painting ------------------------------------------------------------------------------------------

    def paint(self, alpha, color, top: int = 0):
        """Blend `color` over rows top: with coverage `alpha` ([B, h, W] or broadcastable)."""
        view = self.img[:, top:]
        view += alpha[..., None] * (color - view)

    def rows_below(self, y_min, margin=0.0) -> int:
        """First pixel row a layer reaching up to y_min (- margin) can touch: its work skips the rows above,
        where its coverage is exactly 0 (so chunked renders stay bit-identical)."""
        return int(np.clip(np.floor((np.min(y_min) - margin) * self.H) - 1, 0, self.H - 1))

    def sky(self, top, horizon, horizon_y, curve=1.0):
        t = _sat(self.y / horizon_y[:, None, None]) ** curve
        self.img[:] = _px(top) + (_px(horizon) - _px(top)) * t[..., None]

    def sun(self, color, radius, altitude, glow, glow_radius, cell=6.0, density=0.6, phase=None):
        """Sparse suns or moons; a moon's `phase` [B] is how far (in radii) the shadow disc that bites its
        crescent is shifted: 0.5 is a thin crescent, 2 or more a full moon."""
        xc, present, _ = self.cells(cell, density)(self.u)
        dist = np.where(present, np.abs(self.u[None, :, None] - xc), np.inf)
        nearest = np.argmin(dist, -1)[..., None]
        self.sun_x = np.take_along_axis(xc, nearest, -1)[..., 0]
        self.sun_on = np.take_along_axis(present, nearest, -1)[..., 0]
        dx = _col(np.where(self.sun_on, self.u - self.sun_x, 1e3))
        dy = self.y - _img(altitude)
        d = np.sqrt(dx * dx + dy * dy)
        self.paint(glow[:, None, None] * np.exp(-(d / glow_radius) ** 2), _px(color))
        disc = _sat((_img(radius) - d) / self.px + 0.5)
        if phase is not None:
            shift = _img(phase * radius)
            bite = _sat((_img(radius) - np.sqrt((dx - shift) ** 2 + (dy + 0.3 * shift) ** 2)) / self.px + 0.5)
            disc = disc * (1 - bite)
        self.paint(disc, _px(color))

    def stars(self, density, brightness, color):
        """White noise of points, thinning towards the horizon glow; a pixel-level (not scaled) texture."""
        h = self.pixel_noise()
        on = h < _img(density)
        level = (h / _img(density)) ** 2 * _sat(1.2 - 1.6 * self.y)
        self.paint(np.where(on, brightness * level, 0).astype(F32), _px(color))

    def band(self, top: Profile, bottom: Profile, color_top, color_bottom, soft=0.0, opacity=1.0):
        """Fill between two profiles (foam, snow drifts, grass patches), shaded from color_top to color_bottom."""
        t, b = _col(top(self.u)), _col(bottom(self.u))
        edge = max(soft, self.px)
        first = self.rows_below(t, edge)
        y = self.y[:, first:]
        shading = _sat((y - t) / np.maximum(b - t, self.px))[..., None]
        self.paint(_span(y, t, b, edge) * opacity, _px(color_top) + (_px(color_bottom) - _px(color_top)) * shading,
                   first)

    def ridge(self, profile: Profile, color, bottom=None, fade=0.3, shade=0.0, shade_depth=0.15, cap=None,
              cap_color=None, floor=None, strata=0.0, grain=0.0, streaks=0.0):
        """Fill below `profile` (and above `floor`, if given): hills, mountains, dunes, cliffs, the ground.

        color: at the crest, lit by the slope (shade, fading out over shade_depth heights below the crest);
        it turns into `bottom` over `fade` heights below the crest (valley mist, or a darker base).
        cap: a profile above which the layer is cap_color (snow, grass). strata: horizontal rock bands.
        grain, streaks: per-pixel and per-column texture.
        """
        top = profile(self.u)
        # Slopes over a fixed span (not a pixel), so fine ridges shade faces, not column-wide stripes.
        slope = (profile(self.u + _SLOPE_SPAN) - profile(self.u - _SLOPE_SPAN)) / (2 * _SLOPE_SPAN)
        first = self.rows_below(top)
        y, top = self.y[:, first:], _col(top)
        depth = y - top
        face = _col(shade * np.tanh(1.5 * slope * self.light[:, None]))
        lit = (1 + face * _sat(1 - depth / shade_depth))[..., None]
        crest = _px(color) * lit
        if cap is not None:
            is_cap = _sat((_col(cap(self.u)) - y) / self.px + 0.5)[..., None]
            crest = crest + (_px(cap_color) * lit - crest) * is_cap
        if strata:
            crest = crest * (1 + strata * self.strata(y, top))[..., None]
        bottom = _px(color if bottom is None else bottom)
        fill = crest + (bottom - crest) * (_sat(depth / fade) ** 0.8)[..., None]
        if grain:
            fill = fill * (1 + grain * self.grain()[:, first:])[..., None]
        if streaks:
            fill = fill * (1 + streaks * _col(2 * _uniform(self.new_key()[:, None], self.col) - 1))[..., None]
        alpha = _sat(depth / self.px + 0.5) if floor is None else _span(y, top, _col(floor(self.u)), self.px)
        self.paint(alpha, fill, first)

    def strata(self, y, top):
        """Rock bands: a few sines of height, slightly warped with the crest so they follow the rock."""
        f = self.uniform(25, 45)[:, None, None]
        z = (y + 0.15 * top) * f
        return (0.6 * np.sin(z) + 0.4 * np.sin(2.7 * z + 1.3)).astype(F32) * 0.5

    def pixel_noise(self) -> np.ndarray:
        """Fresh white noise in [0, 1), [B, H, W], from the absolute pixel position."""
        return _uniform(self.new_key()[:, None, None], self.col[None, None, :], np.arange(self.H)[None, :, None])

    def grain(self) -> np.ndarray:
        """One shared film of white noise in [-1, 1] that textures several layers."""
        if self._grain is None:
            self._grain = (2 * self.pixel_noise() - 1).astype(F32)
        return self._grain

    def sea(self, horizon, far, near, waves, glitter_color, glitter=0.0):
        """Water below the horizon: distance-graded colour, perspective wave dashes, sun glitter."""
        first = self.rows_below(horizon)
        y = self.y[:, first:]
        depth = _sat((y - _img(horizon)) / (1 - _img(horizon)))
        color = _px(far) + (_px(near) - _px(far)) * (depth ** 0.6)[..., None]
        rows = np.arange(first, self.H)[None, :, None]
        dash_len = 2 + (6 * depth).astype(np.int64)  # pixels: nearer waves are longer
        # A random pixel offset per image makes the dash lattice stationary, not periodic in x.
        offset = (self.uniform() * 2 ** 20).astype(np.int64)[:, None, None]
        dash = _uniform(self.new_key()[:, None, None], (self.col + offset + 13 * rows) // dash_len, rows)
        wave = (2 * dash - 1).astype(F32) * waves
        color = color * (1 + wave)[..., None]
        if glitter and self.sun_x is not None:
            near_sun = np.where(self.sun_on, np.exp(-((self.u - self.sun_x) / 0.12) ** 2), 0)
            sparkle = glitter * _col(near_sun) * (dash > 0.6) * (1 - depth) ** 0.5
            color = color + (_px(glitter_color) - color) * sparkle[..., None]
        self.paint(_sat((y - _img(horizon)) / self.px + 0.5), color, first)

    def objects(self, kind: str, ground: Profile, cell, density, size, depth, color, accent=None, spread=1):
        """Trees, rocks, bushes or cacti standing on `ground`, drawn far to near.

        Each object stands up to `depth` heights below the ground line at its centre, and is scaled with
        that depth (lower on the image = nearer = larger). size: [B] typical height in heights.
        accent: the trunk colour (default: a darker `color`).
        """
        accent = color * 0.6 if accent is None else accent
        xc, present, r = self.cells(cell, density, spread)(self.u)
        sink = r(0) * np.reshape(depth, (-1, 1, 1))  # a number or one per image
        base = ground(xc.reshape(self.B, -1)).reshape(xc.shape) + sink
        height = size[:, None, None] * (0.7 + 0.6 * r(1)) * (1 + 2.5 * sink)
        order = np.argsort(np.where(present, base, -np.inf), -1, kind="stable")
        xc, present, base, height, r2 = (np.take_along_axis(a, order, -1)
                                         for a in (xc, present, base, height, r(2)))
        first = self.rows_below(np.where(present, base - 1.2 * height, 1.0))  # crowns may top `height`
        y = self.y[:, first:]
        for k in range(xc.shape[-1]):
            dx = _col(self.u - xc[..., k])
            shape = _SHAPES[kind](dx, y - _col(base[..., k]), _col(height[..., k]), _col(r2[..., k]), self)
            on = _col(present[..., k].astype(F32))
            for alpha, lit in shape:
                self.paint(alpha * on, _px(color) * lit[..., None] if lit is not None else _px(accent), first)


def _span(y, top, bottom, edge):
    """Coverage of pixels (centres y, size edge) by the interval [top, bottom]: 0 where it is empty."""
    return _sat((np.minimum(bottom, y + 0.5 * edge) - np.maximum(top, y - 0.5 * edge)) / edge)


def _px(c):
    """[B, 3] colour -> [B, 1, 1, 3] for painting."""
    return c[:, None, None, :]


def _col(a):
    """[B, W] column values -> [B, 1, W] float32."""
    return np.asarray(a, F32)[:, None, :]


def _img(a):
    """[B] per-image values -> [B, 1, 1] float32."""
    return np.asarray(a, F32)[:, None, None]


def _value_noise(key: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Catmull-Rom interpolation of hashed lattice values in [-1, 1]: smooth, no flat spots at the knots."""
    i = np.floor(t)
    f = t - i
    i = i.astype(np.int64)
    p0, p1, p2, p3 = (2 * _uniform(key, i + d) - 1 for d in (-1, 0, 1, 2))
    return p1 + 0.5 * f * (p2 - p0 + f * (2 * p0 - 5 * p1 + 4 * p2 - p3 + f * (3 * (p1 - p2) + p3 - p0)))


# --- object shapes: (dx, dy from the base, height, r in [0,1), scene) -> [(alpha, lighting or None)] ------
# lighting None means "paint the accent colour" (trunks); otherwise it multiplies the object colour.


def _cover(distance_inside, px):
    return _sat(distance_inside / px + 0.5)


def _side_light(dx, width, scene, amount=0.25):
    return 1 + amount * np.clip(dx / width, -1, 1) * _img(scene.light)


def _conifer(dx, dy, h, r, s):
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


def _broadleaf(dx, dy, h, r, s):
    a, b = h * (0.3 + 0.12 * r), h * 0.3
    cy = dy + 0.62 * h
    trunk = _cover(np.maximum(0.06 * a, 0.35 * s.px) - np.abs(dx), s.px) * _cover(-dy, s.px) * (cy > 0)
    lit = _side_light(dx, a, s) * (1.1 - 0.25 * np.clip(cy / b, -1, 1))
    return [(trunk, None), (_puffs(dx, cy, a, b, s.px), lit)]


def _acacia(dx, dy, h, r, s):
    a, cy = h * (0.55 + 0.25 * r), dy + 0.85 * h  # canopy half-width, height above the canopy's underside
    thick = np.where(cy < 0, 0.16 * h, 0.04 * h)  # a flat-bottomed umbrella
    canopy = _cover((1 - np.sqrt((dx / a) ** 2 + (cy / thick) ** 2)) * thick, s.px)
    fork = 0.45 * h  # trunk splits into two limbs this far above the ground
    spread = np.clip((-dy - fork) / (0.85 * h - fork), 0, 1) * 0.45 * a
    limb = np.minimum(np.abs(dx - spread), np.abs(dx + spread))
    trunk = _cover(np.maximum(0.025 * h, 0.35 * s.px) - limb, s.px) * _cover(-dy, s.px) * (cy > -0.05 * h)
    return [(trunk, None), (canopy, _side_light(dx, a, s, 0.15) * (1.1 - 0.3 * _sat(cy / thick + 1)))]


def _rock(dx, dy, h, r, s):
    a = h * (0.8 + 0.8 * r)
    inside = 1 - np.sqrt((dx / a) ** 2 + (dy / h) ** 2)
    alpha = _cover(inside * h, s.px) * _cover(-dy + 0.02 * h, s.px)
    return [(alpha, _side_light(dx, a, s, 0.35) * (1.15 - 0.45 * _sat(1 + dy / h)))]


def _bush(dx, dy, h, r, s):
    a, b = h * (0.8 + 0.5 * r), 0.45 * h
    cy = dy + 0.5 * h
    return [(_puffs(dx, cy, a, b, s.px), _side_light(dx, a, s) * (1.15 - 0.3 * _sat(cy / b + 0.5)))]


_HEAP = [(0.0, 0.55, 0.55), (-0.7, 0.35, 0.4), (0.75, 0.3, 0.42), (-0.3, 0.8, 0.38), (0.35, 0.75, 0.4),
         (-1.2, 0.2, 0.25), (1.25, 0.2, 0.27)]  # (x, height, radius) of a cumulus' puffs, in cloud heights


def _cloud(dx, dy, h, r, s):
    w = h * (0.9 + 0.5 * r)  # stretch sideways
    inside = np.maximum.reduce([k * h - np.sqrt(((dx - ox * w) * h / w) ** 2 + (dy + oy * h) ** 2)
                                for ox, oy, k in _HEAP])
    alpha = _cover(inside, s.px) * _cover(-dy, s.px)  # cut flat at the base
    return [(alpha, 1.05 - 0.35 * _sat(1 + dy / (0.6 * h)))]


def _segment_distance(px_, py_, ax, ay, bx, by):
    """Distance from points to the segment a-b (arrays broadcast)."""
    vx, vy = bx - ax, by - ay
    t = _sat(((px_ - ax) * vx + (py_ - ay) * vy) / (vx * vx + vy * vy))
    return np.sqrt((px_ - ax - t * vx) ** 2 + (py_ - ay - t * vy) ** 2)


def _cactus(dx, dy, h, r, s):
    w = np.maximum(0.08 * h, 0.5 * s.px)
    d = _segment_distance(dx, dy, 0.0, 0.0, 0.0, -h + w)
    for side, (elbow, reach) in zip((-1, 1), ((0.45, 0.28), (0.6, 0.24))):
        ey, ex = -(elbow + 0.1 * r) * h, side * reach * h
        arm = np.minimum(_segment_distance(dx, dy, 0.0, ey, ex, ey),
                         _segment_distance(dx, dy, ex, ey, ex, ey - 0.25 * h))
        d = np.minimum(d, arm + 0.25 * w)  # arms are a little thinner than the trunk
    alpha = _cover(w - d, s.px) * _cover(-dy + w, s.px)
    return [(alpha, _side_light(dx, w * 4, s, 0.3))]


_SHAPES = {"conifer": _conifer, "broadleaf": _broadleaf, "acacia": _acacia, "rock": _rock, "bush": _bush,
           "cactus": _cactus, "cloud": _cloud}


def _treeline(scene: _Scene, ground: Profile, cell, size, kind="conifer", aspect=0.28) -> Profile:
    """A forest seen from afar: the ground profile raised by a dense row of tree crowns (a silhouette).
    aspect: a conifer's half-width over its height."""
    at = scene.cells(cell, 0.92, spread=2)

    def profile(u):
        xc, present, r = at(u)
        h = size * (0.6 + 0.7 * r(0))
        dx = np.abs(u[..., None] - xc)
        if kind == "conifer":
            crown = h - dx / aspect
        else:  # round crowns
            rad = 0.45 * h
            crown = h - rad + np.sqrt(np.maximum(rad ** 2 - dx ** 2, 0)) - 10 * (dx > rad)
        return ground(u) - np.max(np.where(present, np.maximum(crown, 0), 0), -1)

    return profile


# --- the classes: each recipe paints one batch of its scenes, back to front --------------------------------


def _lerp(a, b, t):
    return a + (b - a) * np.asarray(t, F32).reshape(-1, 1)


def _level(base, amp, noise: Profile) -> Profile:
    """base + amp * noise(u) for per-image base and amp ([B] or scalars)."""
    base, amp = np.asarray(base)[..., None], np.asarray(amp)[..., None]
    return lambda u: base + amp * noise(u)


def _flat(y) -> Profile:
    """A level line at per-image height y [B]."""
    return lambda u: y[:, None] + np.zeros_like(u)


def _clouds(s: _Scene, horizon, color, amount=(0.1, 0.7), size=(0.03, 0.07), rows=2):
    """Cumulus: flat-bottomed heaps of puffs in rows; lower rows are nearer, so their clouds are larger."""
    for row in range(rows):
        altitude = horizon * s.uniform(0.15, 0.35) + 0.15 * row * horizon
        s.objects("cloud", _flat(altitude), 0.7, s.uniform(*amount), s.uniform(*size) * (1 + row), 0.1, color)


def _patches(s: _Scene, horizon, color, shade, haze, size, rows=(0.1, 0.4, 0.7, 1.0)):
    """Flat patches lying on the ground (snow drifts, greener grass) in rows receding to the horizon:
    lens shapes wherever a noise is high, thicker and less hazy when nearer."""
    for depth in rows:
        shape, level = s.noise(s.uniform(1.5, 3) / depth, 3), s.uniform(-0.2, 0.5)[:, None]
        y = (horizon + 0.04 + (0.95 - horizon) * depth * s.uniform(0.6, 0.9))[:, None]
        thick = lambda u, n=shape, lv=level, k=size * (0.3 + depth): k * np.maximum(n(u) - lv, 0)
        s.band(lambda u, y=y, t=thick: y - t(u), lambda u, y=y, t=thick: y + 0.5 * t(u),
               _lerp(color, haze, 0.3 * (1 - depth)), _lerp(shade, haze, 0.3 * (1 - depth)))


def _desert(s: _Scene):
    mood = s.choice(3)  # clear, hazy, golden hour
    horizon = s.uniform(0.42, 0.6)
    haze = s.rgb([(238, 222, 196), (226, 208, 180), (250, 196, 130)], mood)
    s.sky(s.rgb([(55, 115, 200), (140, 160, 190), (90, 100, 165)], mood), haze, horizon, 0.7)
    s.sun(s.rgb([(255, 250, 235), (255, 246, 225), (255, 225, 160)], mood), s.uniform(0.025, 0.045),
          horizon - s.uniform(0.06, 0.35), s.uniform(0.3, 0.6), 0.25)
    _clouds(s, horizon, s.rgb([(250, 245, 240)], jitter=0.02), amount=(0.0, 0.3), rows=1)
    sand = s.rgb([(232, 170, 100), (222, 178, 124), (236, 146, 76)], mood)
    shadow = s.rgb([(176, 102, 62), (170, 125, 92), (150, 78, 56)], mood)
    for depth in np.linspace(0, 1, 6):
        base = horizon + 0.02 + (0.92 - horizon) * depth ** 1.2 * s.uniform(0.8, 1.0)
        amp = (0.03 + 0.12 * depth) * s.uniform(0.6, 1.2)
        dunes = s.noise(s.uniform(1.0, 1.6) / (0.3 + depth), 3, 0.3, "ridged")
        haze_amount = 0.6 * (1 - depth) ** 2
        s.ridge(_level(base, -amp * 0.5, dunes), _lerp(sand, haze, haze_amount),
                _lerp(_lerp(sand, shadow, 0.5), haze, haze_amount), fade=0.04 + 0.1 * depth, shade=0.4,
                shade_depth=0.03 + 0.1 * depth, grain=0.04 * depth)
    s.objects("bush", _flat(horizon + 0.1), 0.6, 0.35, s.uniform(0.01, 0.02), 0.9 - horizon, s.rgb([(120, 110, 60)]))


def _alpine(s: _Scene):
    mood = s.choice(3)  # clear, cloudy, evening
    horizon = s.uniform(0.5, 0.62)
    haze = s.rgb([(195, 218, 238), (205, 210, 218), (236, 204, 180)], mood)
    s.sky(s.rgb([(35, 95, 190), (110, 130, 160), (70, 85, 150)], mood), haze, horizon * 0.8)
    _clouds(s, horizon * 0.8, s.rgb([(255, 255, 255), (230, 232, 236), (255, 225, 205)], mood, 0.02))
    snow = s.rgb([(250, 252, 255), (236, 240, 245), (255, 236, 225)], mood)
    rock = s.rgb([(75, 80, 95), (70, 72, 80), (90, 75, 85)], mood)
    far = s.rgb([(120, 145, 185), (140, 150, 165), (150, 130, 160)], mood)
    for depth in (0.0, 1.0):
        base, amp = horizon + 0.06 * depth, s.uniform(0.3, 0.45) * (1 - 0.35 * depth)
        crest = s.noise(s.uniform(0.8, 1.3), 5, 0.45, "ridged")
        peaks = lambda u, c=crest, b=base, a=amp: b[:, None] - a[:, None] * (0.5 + 0.5 * np.tanh(c(u))) ** 1.6
        snowline = _level(base - amp * s.uniform(0.3, 0.5), 0.05, s.noise(14, 3, 0.6))
        color = _lerp(far, rock, depth)
        s.ridge(peaks, color, _lerp(color, haze, 0.5), fade=0.4, shade=0.35, cap=snowline,
                cap_color=_lerp(snow, haze, 0.25 - 0.25 * depth))
    pine = s.rgb([(38, 70, 48), (42, 64, 52), (45, 55, 45)], mood)
    hills = _level(horizon + 0.1, 0.04, s.noise(1.5, 3))
    s.ridge(_treeline(s, hills, 0.035, 0.08, aspect=0.4), _lerp(pine, haze, 0.2), pine * 0.8, fade=0.15)
    meadow = _level(horizon + s.uniform(0.18, 0.25), 0.03, s.noise(1.2, 3))
    grass = s.rgb([(110, 150, 60), (95, 130, 65), (120, 125, 60)], mood)
    s.ridge(meadow, grass, grass * 0.7, fade=0.3, shade=0.15, grain=0.08, streaks=0.05)
    s.objects("conifer", meadow, 0.3, 0.45, s.uniform(0.12, 0.22), 0.15, pine * 0.8, s.rgb([(70, 50, 35)]))


def _forest(s: _Scene):
    mood = s.choice(3)  # clear, misty, golden
    horizon = s.uniform(0.45, 0.6)
    haze = s.rgb([(205, 222, 228), (215, 220, 218), (246, 222, 172)], mood)
    s.sky(s.rgb([(95, 150, 210), (175, 185, 188), (130, 150, 185)], mood), haze, horizon)
    _clouds(s, horizon, s.rgb([(250, 250, 250)], jitter=0.02), rows=1)
    pine = s.rgb([(30, 68, 42), (36, 62, 46), (48, 62, 34)], mood)
    for k, depth in enumerate((0.0, 0.3, 0.6, 1.0)):
        hills = _level(horizon - 0.02 + 0.25 * depth, 0.03 + 0.03 * depth, s.noise(1 + k, 3))
        kind = "conifer" if k % 2 == 0 else "round"
        color = _lerp(pine, haze, 0.7 * (1 - depth))
        s.ridge(_treeline(s, hills, 0.015 + 0.03 * depth, 0.05 + 0.12 * depth, kind), color,
                _lerp(pine, haze, 0.85 - 0.5 * depth), fade=0.08 + 0.1 * depth, grain=0.06 * depth)
    floor = _level(s.uniform(0.88, 0.95), 0.02, s.noise(2))
    s.ridge(floor, s.rgb([(70, 90, 40), (65, 80, 50), (95, 85, 40)], mood), grain=0.12)
    s.objects("conifer", floor, 0.2, 0.5, s.uniform(0.3, 0.45), 0.05, pine * 0.75, s.rgb([(60, 42, 30)]))
    leaves = s.rgb([(55, 95, 40), (60, 90, 50), (120, 110, 40)], mood)  # golden light: autumn leaves
    s.objects("broadleaf", floor, 0.35, 0.35, s.uniform(0.3, 0.4), 0.05, leaves, s.rgb([(70, 50, 35)]))


def _coast(s: _Scene):
    mood = s.choice(3)  # clear, sunset, grey
    horizon = s.uniform(0.42, 0.58)
    haze = s.rgb([(200, 225, 242), (252, 196, 150), (212, 216, 222)], mood)
    s.sky(s.rgb([(45, 115, 205), (85, 90, 165), (130, 145, 165)], mood), haze, horizon)
    s.sun(s.rgb([(255, 252, 235), (255, 215, 140), (240, 240, 240)], mood), s.uniform(0.025, 0.04),
          horizon - s.uniform(0.03, 0.3), s.uniform(0.3, 0.6), 0.25)
    _clouds(s, horizon, s.rgb([(255, 255, 255), (255, 210, 190), (225, 228, 232)], mood, 0.02))
    s.sea(horizon, _lerp(s.rgb([(60, 120, 170), (110, 100, 140), (100, 120, 135)], mood), haze, 0.3),
          s.rgb([(20, 80, 125), (45, 55, 95), (55, 75, 90)], mood), 0.08, s.rgb([(255, 250, 225)]), 0.8)
    # Headlands where a slow noise is high: grassy rolling tops over rock cliffs that drop into the sea.
    land, roll = s.noise(s.uniform(0.25, 0.5), 3), s.noise(3, 3)
    cliff_base = (horizon + s.uniform(0.03, 0.2))[:, None]
    level, tall = s.uniform(-0.2, 0.5)[:, None], s.uniform(0.12, 0.3)[:, None]
    rise = lambda u: tall * _sat(2.5 * (land(u) - level)) ** 0.7 * (0.8 + 0.2 * roll(u))
    rock = s.rgb([(196, 178, 150), (170, 125, 110), (160, 155, 148)], mood)
    s.ridge(lambda u: cliff_base - rise(u), rock, rock * 0.55, fade=0.25, shade=0.3,
            cap=lambda u: cliff_base - 0.6 * rise(u) + 0.01 * roll(u),
            cap_color=s.rgb([(95, 135, 60), (90, 100, 55), (90, 115, 70)], mood), floor=lambda u: cliff_base,
            strata=0.2)
    shore = _level(s.uniform(0.78, 0.9), 0.025, s.noise(1.5, 3))
    sand = s.rgb([(232, 212, 170), (225, 180, 140), (200, 190, 170)], mood)
    s.band(lambda u: shore(u) - 0.012, lambda u: shore(u) + 0.02, s.rgb([(245, 250, 250)]), sand * 0.75,
           soft=1.5 * s.px, opacity=0.9)
    s.ridge(lambda u: shore(u) + 0.02, sand * 0.8, sand, fade=0.12, grain=0.08)


def _canyon(s: _Scene):
    mood = s.choice(2)  # clear, evening
    horizon = s.uniform(0.5, 0.62)
    haze = s.rgb([(215, 210, 205), (246, 196, 150)], mood)
    s.sky(s.rgb([(50, 110, 195), (85, 95, 165)], mood), haze, horizon * 0.9)
    _clouds(s, horizon * 0.8, s.rgb([(255, 255, 255), (255, 215, 190)], mood, 0.02), amount=(0.0, 0.4), rows=1)
    red = s.rgb([(185, 85, 45), (170, 70, 40)], mood, jitter=0.08)
    for depth in (0.0, 0.5, 1.0):
        # Mesas and buttes: a clipped noise gives flat tops and steep walls.
        base, tall = horizon + 0.12 * depth, s.uniform(0.18, 0.32) * (0.6 + 0.6 * depth)
        mass, level = s.noise(s.uniform(0.5, 0.9) / (0.5 + depth), 4, 0.4), s.uniform(-0.2, 0.4)[:, None]
        top = lambda u, m=mass, lv=level, b=base, t=tall: b[:, None] - t[:, None] * _sat(3 * (m(u) - lv))
        color = _lerp(red, haze, 0.65 * (1 - depth))
        s.ridge(top, color, _lerp(red * 0.55, haze, 0.5 * (1 - depth)), fade=0.35, shade=0.35,
                strata=0.35, grain=0.03)
    ground = _level(s.uniform(0.84, 0.9), 0.02, s.noise(2))
    s.ridge(ground, s.rgb([(190, 120, 75)]), s.rgb([(150, 85, 55)]), fade=0.15, grain=0.1)
    s.objects("rock", ground, 0.4, 0.35, s.uniform(0.02, 0.04), 0.1, s.rgb([(140, 70, 45)]))
    s.objects("bush", ground, 0.35, 0.3, s.uniform(0.02, 0.04), 0.1, s.rgb([(105, 110, 60)]))
    s.objects("cactus", ground, 0.6, 0.35, s.uniform(0.14, 0.22), 0.1, s.rgb([(70, 100, 55)]))


def _tundra(s: _Scene):
    mood = s.choice(3)  # overcast, clear cold, autumn dusk
    horizon = s.uniform(0.5, 0.65)
    haze = s.rgb([(218, 222, 228), (212, 228, 240), (236, 205, 195)], mood)
    s.sky(s.rgb([(150, 160, 176), (85, 135, 200), (90, 100, 150)], mood), haze, horizon)
    s.sun(s.rgb([(250, 245, 230), (255, 250, 235), (255, 200, 160)], mood), s.uniform(0.02, 0.035),
          horizon - s.uniform(0.02, 0.15), s.uniform(0.15, 0.4), 0.3)
    _clouds(s, horizon, s.rgb([(238, 240, 244), (255, 255, 255), (245, 210, 205)], mood, 0.02), amount=(0.3, 0.9))
    snow = s.rgb([(240, 244, 250), (245, 250, 255), (240, 225, 230)], mood)
    far = _level(horizon - s.uniform(0.0, 0.1), -s.uniform(0.03, 0.08), s.noise(1.2, 4, 0.5, "ridged"))
    s.ridge(far, _lerp(snow, haze, 0.4), _lerp(snow * 0.9, haze, 0.6), fade=0.1, shade=0.2)
    moss = s.rgb([(140, 125, 80), (125, 122, 80), (150, 120, 70)], mood, jitter=0.08)
    for depth in (0.0, 1.0):
        plain = _level(horizon + 0.02 + 0.15 * depth, 0.02 + 0.02 * depth, s.noise(1.5, 3))
        ground = _lerp(moss, haze, 0.4 * (1 - depth))
        s.ridge(plain, ground, ground * 0.85, fade=0.2, grain=0.12 * depth)
    _patches(s, horizon, snow, snow * 0.85, haze, 0.03)
    # Stones, shrubs and a rare spruce anywhere on the plain, larger when nearer.
    plain, spread = _flat(horizon + 0.05), 0.9 - horizon
    s.objects("rock", plain, 0.4, 0.4, s.uniform(0.01, 0.02), spread, s.rgb([(120, 118, 115)]))
    s.objects("bush", plain, 0.3, 0.4, s.uniform(0.01, 0.018), spread, s.rgb([(90, 75, 55)]))
    s.objects("conifer", plain, 1.0, 0.25, s.uniform(0.05, 0.08), spread, s.rgb([(40, 60, 45)]), s.rgb([(60, 45, 35)]))


def _night(s: _Scene):
    mood = s.choice(3)  # moonlit, twilight, dark
    horizon = s.uniform(0.5, 0.65)
    glow = s.rgb([(35, 60, 100), (95, 70, 120), (20, 30, 55)], mood)
    s.sky(s.rgb([(4, 8, 28), (18, 16, 50), (2, 4, 14)], mood), glow, horizon, 1.3)
    s.stars(s.uniform(0.01, 0.03), 0.9, s.rgb([(250, 250, 255)]))
    s.sun(s.rgb([(245, 240, 215)]), s.uniform(0.03, 0.05), horizon - s.uniform(0.15, 0.4), s.uniform(0.15, 0.3),
          0.2, cell=5.0, density=0.7, phase=s.uniform(0.6, 2.5))
    _clouds(s, horizon, s.rgb([(50, 60, 90), (90, 75, 115), (30, 35, 55)], mood), amount=(0.0, 0.4), rows=1)
    dark = s.rgb([(10, 14, 28), (14, 12, 28), (5, 7, 14)], mood)
    for depth in (0.0, 0.5, 1.0):
        hills = _level(horizon - 0.12 * (1 - depth) + 0.1 * depth, -s.uniform(0.05, 0.15),
                       s.noise(s.uniform(0.8, 1.6), 5, 0.5, "ridged"))
        color = _lerp(dark, glow, 0.7 * (1 - depth))
        s.ridge(hills, color, _lerp(color, glow, 0.2), fade=0.2, shade=0.3)
    trees = _level(s.uniform(0.82, 0.92), 0.03, s.noise(1.2))
    s.ridge(_treeline(s, trees, 0.06, 0.25), dark * 0.5)


def _savanna(s: _Scene):
    mood = s.choice(3)  # noon, sunset, dusty
    horizon = s.uniform(0.55, 0.68)
    haze = s.rgb([(228, 225, 205), (255, 175, 95), (235, 215, 175)], mood)
    s.sky(s.rgb([(65, 130, 210), (110, 85, 145), (120, 150, 185)], mood), haze, horizon, 1.4)
    s.sun(s.rgb([(255, 250, 235), (255, 210, 120), (255, 240, 215)], mood), s.uniform(0.03, 0.06),
          horizon - s.uniform(0.02, 0.3), s.uniform(0.3, 0.6), 0.3)
    _clouds(s, horizon, s.rgb([(255, 255, 255), (255, 190, 150), (240, 235, 225)], mood, 0.02))
    hills = _level(horizon - s.uniform(0.0, 0.06), -s.uniform(0.02, 0.08), s.noise(0.8, 4))
    s.ridge(hills, _lerp(s.rgb([(120, 125, 150), (120, 80, 100), (140, 135, 140)], mood), haze, 0.5), shade=0.15)
    grass = s.rgb([(212, 178, 95), (190, 120, 60), (205, 175, 110)], mood, jitter=0.08)
    tree = s.rgb([(65, 75, 35), (40, 30, 30), (75, 80, 45)], mood)
    plain = _level(horizon + 0.01, 0.005, s.noise(2))
    s.ridge(plain, _lerp(grass, haze, 0.35), grass * 0.8, fade=0.4, grain=0.06, streaks=0.03)
    _patches(s, horizon, _lerp(grass, tree, 0.25), _lerp(grass, tree, 0.35), haze, 0.03)
    s.objects("acacia", plain, 0.2, 0.5, s.uniform(0.04, 0.06), 0.1, _lerp(tree, haze, 0.4))
    s.objects("bush", plain, 0.2, 0.3, s.uniform(0.015, 0.025), 0.25, _lerp(tree, grass, 0.3))
    s.objects("acacia", plain, 0.6, 0.6, s.uniform(0.12, 0.18), 0.25, tree, tree * 0.8)


_RECIPES = {"desert": _desert, "alpine": _alpine, "forest": _forest, "coast": _coast, "canyon": _canyon,
             "tundra": _tundra, "night": _night, "savanna": _savanna}


# --- rendering -----------------------------------------------------------------------------------------------


def render_batch(classes: Sequence[str | int], seeds: Sequence[int], width: int, height: int,
                 x0: int = 0) -> np.ndarray:
    """uint8 [B, H, W, 3]: image b shows class classes[b] from seeds[b], columns x0 .. x0 + width - 1."""
    labels = np.array([c if isinstance(c, (int, np.integer)) else class_index(c) for c in classes], np.int64)
    if len(labels) != len(seeds):
        raise EqgenError(f"got {len(labels)} classes for {len(seeds)} seeds")
    if np.any((labels < 0) | (labels >= len(CLASSES))):
        raise EqgenError(f"class indices must be in [0, {len(CLASSES)})")
    _check_shape(height, width)
    if int(x0) != x0:
        raise EqgenError(f"x0 must be an integer pixel column, got {x0}")
    seeds = np.array([int(s) % 2 ** 64 for s in seeds], np.uint64)
    out = np.empty((len(labels), height, width, 3), np.uint8)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        scene = _Scene(seeds[idx], int(label), int(width), int(height), int(x0))
        _RECIPES[CLASSES[label]](scene)
        out[idx] = np.rint(np.clip(scene.img, 0, 1) * 255)
    return out


def render(cls: str | int, width: int, height: int = 64, seed: int = 0, x0: int = 0) -> np.ndarray:
    """One landscape, uint8 [H, W, 3]; render(c, w, h, s, x0=a) is columns a .. a+w-1 of any wider render."""
    return render_batch([cls], [seed], width, height, x0)[0]


# --- torch views ---------------------------------------------------------------------------------------------


def _class_names(classes: Sequence[str] | None) -> list[str]:
    names = list(CLASSES if classes is None else classes)
    if not names:
        raise EqgenError("classes must name at least one landscape class")
    for name in names:
        class_index(name)
    if len(set(names)) != len(names):
        raise EqgenError(f"classes has duplicates: {', '.join(names)}")
    return names


def _check_shape(height: int, width: int) -> None:
    if int(width) != width or width < 1:
        raise EqgenError(f"width must be a positive integer, got {width}")
    if int(height) != height or height < MIN_HEIGHT:
        raise EqgenError(f"height must be an integer >= {MIN_HEIGHT}, got {height}")


class LandscapeDataset(torch.utils.data.Dataset):
    """A fixed set of `size` landscapes: item i is (image float [3, H, W] in [-1, 1], label), a pure function
    of (seed, i). Labels index `classes` and cycle through them, so the classes are balanced.

    `__getitems__` renders a whole DataLoader batch in one vectorised call.
    """

    def __init__(self, size: int, height: int, width: int, seed: int = 0, classes: Sequence[str] | None = None):
        if int(size) != size or size < 0:
            raise EqgenError(f"size must be a non-negative integer, got {size}")
        _check_shape(height, width)
        self.size, self.height, self.width, self.seed = int(size), int(height), int(width), int(seed)
        self.classes = _class_names(classes)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        indices = [int(i) + self.size if i < 0 else int(i) for i in indices]
        if any(not 0 <= i < self.size for i in indices):
            raise IndexError(f"index out of range for a dataset of {self.size} landscapes")
        labels = [i % len(self.classes) for i in indices]
        seeds = _seeds(self.seed, 0, np.array(indices, np.int64))
        images = render_batch([self.classes[k] for k in labels], seeds.tolist(), self.width, self.height)
        return list(zip(from_uint8(images), labels))


def iterate_landscapes(batch_size: int, height: int, width: int, seed: int = 0, classes: Sequence[str] | None = None,
                       start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless fresh batches (images [B, 3, H, W] float in [-1, 1], labels [B] long indexing `classes`).

    Batch k is a pure function of (seed, k), so a run resumed with start=k sees exactly the batches an
    uninterrupted run would have seen. Labels are drawn uniformly.
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise EqgenError(f"batch_size must be a positive integer, got {batch_size}")
    _check_shape(height, width)
    return _batches(int(batch_size), int(height), int(width), int(seed), _class_names(classes), int(start))


def _batches(batch_size, height, width, seed, names, step):
    position = np.arange(batch_size)
    while True:
        labels = (_uniform(_seeds(seed, 2, step), position) * len(names)).astype(np.int64)
        seeds = _seeds(seed, 1, step, position)
        images = render_batch([names[k] for k in labels], seeds.tolist(), width, height)
        yield from_uint8(images), torch.from_numpy(labels)
        step += 1

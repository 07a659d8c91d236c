"""The scene: a batch of images of one class, its random streams and coordinates, and the layer primitives
(sky, suns, stars, bands, ridges, sea, objects) that recipes paint back to front.

Arrays: per-image parameters are [B], column profiles [B, W], pixels [B, H, W]. Nothing ever looks at a
neighbouring column, which keeps chunks seamless.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .noise import GOLDEN, hashed_uniform, mix, value_noise

F32 = np.float32
Profile = Callable[[np.ndarray], np.ndarray]  # u [W] (heights) -> y [B, W] of a silhouette's top
# An object's shape (shapes.py): (dx, dy from the base, height, r in [0,1), scene) -> [(alpha, lighting or None)]
Shape = Callable[..., list]
_SLOPE_SPAN = 0.025  # heights


def clip01(x):
    return np.clip(x, 0.0, 1.0)


class Scene:
    """A batch of images of one class under construction, painted back to front."""

    def __init__(self, seeds: np.ndarray, label: int, width: int, height: int, x0: int):
        self.key = mix(mix(seeds) ^ np.uint64(label + 1))  # [B]
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
        return mix(self.key ^ np.uint64(self.draws * GOLDEN % 2 ** 64))

    def uniform(self, lo=0.0, hi=1.0) -> np.ndarray:
        return lo + (hi - lo) * hashed_uniform(self.new_key())

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
                n = value_noise(key, t * 2 ** k)
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
            present = hashed_uniform(key, k_int, 0) < np.reshape(density, (-1, 1, 1))  # a number or one per image
            xc = (k + hashed_uniform(key, k_int, 1) - phase) * cell
            return xc, present, lambda j: hashed_uniform(key, k_int, j + 2)

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
        t = clip01(self.y / horizon_y[:, None, None]) ** curve
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
        disc = clip01((_img(radius) - d) / self.px + 0.5)
        if phase is not None:
            shift = _img(phase * radius)
            bite = clip01((_img(radius) - np.sqrt((dx - shift) ** 2 + (dy + 0.3 * shift) ** 2)) / self.px + 0.5)
            disc = disc * (1 - bite)
        self.paint(disc, _px(color))

    def stars(self, density, brightness, color):
        """White noise of points, thinning towards the horizon glow; a pixel-level (not scaled) texture."""
        h = self.pixel_noise()
        on = h < _img(density)
        level = (h / _img(density)) ** 2 * clip01(1.2 - 1.6 * self.y)
        self.paint(np.where(on, brightness * level, 0).astype(F32), _px(color))

    def band(self, top: Profile, bottom: Profile, color_top, color_bottom, soft=0.0, opacity=1.0):
        """Fill between two profiles (foam, snow drifts, grass patches), shaded from color_top to color_bottom."""
        t, b = _col(top(self.u)), _col(bottom(self.u))
        edge = max(soft, self.px)
        first = self.rows_below(t, edge)
        y = self.y[:, first:]
        shading = clip01((y - t) / np.maximum(b - t, self.px))[..., None]
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
        lit = (1 + face * clip01(1 - depth / shade_depth))[..., None]
        crest = _px(color) * lit
        if cap is not None:
            is_cap = clip01((_col(cap(self.u)) - y) / self.px + 0.5)[..., None]
            crest = crest + (_px(cap_color) * lit - crest) * is_cap
        if strata:
            crest = crest * (1 + strata * self.strata(y, top))[..., None]
        bottom = _px(color if bottom is None else bottom)
        fill = crest + (bottom - crest) * (clip01(depth / fade) ** 0.8)[..., None]
        if grain:
            fill = fill * (1 + grain * self.grain()[:, first:])[..., None]
        if streaks:
            fill = fill * (1 + streaks * _col(2 * hashed_uniform(self.new_key()[:, None], self.col) - 1))[..., None]
        alpha = clip01(depth / self.px + 0.5) if floor is None else _span(y, top, _col(floor(self.u)), self.px)
        self.paint(alpha, fill, first)

    def strata(self, y, top):
        """Rock bands: a few sines of height, slightly warped with the crest so they follow the rock."""
        f = self.uniform(25, 45)[:, None, None]
        z = (y + 0.15 * top) * f
        return (0.6 * np.sin(z) + 0.4 * np.sin(2.7 * z + 1.3)).astype(F32) * 0.5

    def pixel_noise(self) -> np.ndarray:
        """Fresh white noise in [0, 1), [B, H, W], from the absolute pixel position."""
        return hashed_uniform(self.new_key()[:, None, None], self.col[None, None, :], np.arange(self.H)[None, :, None])

    def grain(self) -> np.ndarray:
        """One shared film of white noise in [-1, 1] that textures several layers."""
        if self._grain is None:
            self._grain = (2 * self.pixel_noise() - 1).astype(F32)
        return self._grain

    def sea(self, horizon, far, near, waves, glitter_color, glitter=0.0):
        """Water below the horizon: distance-graded colour, perspective wave dashes, sun glitter."""
        first = self.rows_below(horizon)
        y = self.y[:, first:]
        depth = clip01((y - _img(horizon)) / (1 - _img(horizon)))
        color = _px(far) + (_px(near) - _px(far)) * (depth ** 0.6)[..., None]
        rows = np.arange(first, self.H)[None, :, None]
        dash_len = 2 + (6 * depth).astype(np.int64)  # pixels: nearer waves are longer
        # A random pixel offset per image makes the dash lattice stationary, not periodic in x.
        offset = (self.uniform() * 2 ** 20).astype(np.int64)[:, None, None]
        dash = hashed_uniform(self.new_key()[:, None, None], (self.col + offset + 13 * rows) // dash_len, rows)
        wave = (2 * dash - 1).astype(F32) * waves
        color = color * (1 + wave)[..., None]
        if glitter and self.sun_x is not None:
            near_sun = np.where(self.sun_on, np.exp(-((self.u - self.sun_x) / 0.12) ** 2), 0)
            sparkle = glitter * _col(near_sun) * (dash > 0.6) * (1 - depth) ** 0.5
            color = color + (_px(glitter_color) - color) * sparkle[..., None]
        self.paint(clip01((y - _img(horizon)) / self.px + 0.5), color, first)

    def objects(self, shape: Shape, ground: Profile, cell, density, size, depth, color, accent=None, spread=1):
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
            parts = shape(dx, y - _col(base[..., k]), _col(height[..., k]), _col(r2[..., k]), self)
            on = _col(present[..., k].astype(F32))
            for alpha, lit in parts:
                self.paint(alpha * on, _px(color) * lit[..., None] if lit is not None else _px(accent), first)


def _span(y, top, bottom, edge):
    """Coverage of pixels (centres y, size edge) by the interval [top, bottom]: 0 where it is empty."""
    return clip01((np.minimum(bottom, y + 0.5 * edge) - np.maximum(top, y - 0.5 * edge)) / edge)


def _px(c):
    """[B, 3] colour -> [B, 1, 1, 3] for painting."""
    return c[:, None, None, :]


def _col(a):
    """[B, W] column values -> [B, 1, W] float32."""
    return np.asarray(a, F32)[:, None, :]


def _img(a):
    """[B] per-image values -> [B, 1, 1] float32."""
    return np.asarray(a, F32)[:, None, None]


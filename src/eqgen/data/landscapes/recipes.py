"""The eight classes: each recipe paints one batch of its scenes, back to front, from the scene's primitives."""
from __future__ import annotations

import numpy as np

from . import shapes
from .scene import F32, Profile, Scene, clip01


def _treeline(scene: Scene, ground: Profile, cell, size, kind="conifer", aspect=0.28) -> Profile:
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



def _lerp(a, b, t):
    return a + (b - a) * np.asarray(t, F32).reshape(-1, 1)


def _level(base, amp, noise: Profile) -> Profile:
    """base + amp * noise(u) for per-image base and amp ([B] or scalars)."""
    base, amp = np.asarray(base)[..., None], np.asarray(amp)[..., None]
    return lambda u: base + amp * noise(u)


def _flat(y) -> Profile:
    """A level line at per-image height y [B]."""
    return lambda u: y[:, None] + np.zeros_like(u)


def _clouds(s: Scene, horizon, color, amount=(0.1, 0.7), size=(0.03, 0.07), rows=2):
    """Cumulus: flat-bottomed heaps of puffs in rows; lower rows are nearer, so their clouds are larger."""
    for row in range(rows):
        altitude = horizon * s.uniform(0.15, 0.35) + 0.15 * row * horizon
        s.objects(shapes.cloud, _flat(altitude), 0.7, s.uniform(*amount), s.uniform(*size) * (1 + row), 0.1, color)


def _patches(s: Scene, horizon, color, shade, haze, size, rows=(0.1, 0.4, 0.7, 1.0)):
    """Flat patches lying on the ground (snow drifts, greener grass) in rows receding to the horizon:
    lens shapes wherever a noise is high, thicker and less hazy when nearer."""
    for depth in rows:
        shape, level = s.noise(s.uniform(1.5, 3) / depth, 3), s.uniform(-0.2, 0.5)[:, None]
        y = (horizon + 0.04 + (0.95 - horizon) * depth * s.uniform(0.6, 0.9))[:, None]
        thick = lambda u, n=shape, lv=level, k=size * (0.3 + depth): k * np.maximum(n(u) - lv, 0)
        s.band(lambda u, y=y, t=thick: y - t(u), lambda u, y=y, t=thick: y + 0.5 * t(u),
               _lerp(color, haze, 0.3 * (1 - depth)), _lerp(shade, haze, 0.3 * (1 - depth)))


def _desert(s: Scene):
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
    s.objects(shapes.bush, _flat(horizon + 0.1), 0.6, 0.35, s.uniform(0.01, 0.02), 0.9 - horizon,
              s.rgb([(120, 110, 60)]))


def _alpine(s: Scene):
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
    s.objects(shapes.conifer, meadow, 0.3, 0.45, s.uniform(0.12, 0.22), 0.15, pine * 0.8, s.rgb([(70, 50, 35)]))


def _forest(s: Scene):
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
    s.objects(shapes.conifer, floor, 0.2, 0.5, s.uniform(0.3, 0.45), 0.05, pine * 0.75, s.rgb([(60, 42, 30)]))
    leaves = s.rgb([(55, 95, 40), (60, 90, 50), (120, 110, 40)], mood)  # golden light: autumn leaves
    s.objects(shapes.broadleaf, floor, 0.35, 0.35, s.uniform(0.3, 0.4), 0.05, leaves, s.rgb([(70, 50, 35)]))


def _coast(s: Scene):
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
    rise = lambda u: tall * clip01(2.5 * (land(u) - level)) ** 0.7 * (0.8 + 0.2 * roll(u))
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


def _canyon(s: Scene):
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
        top = lambda u, m=mass, lv=level, b=base, t=tall: b[:, None] - t[:, None] * clip01(3 * (m(u) - lv))
        color = _lerp(red, haze, 0.65 * (1 - depth))
        s.ridge(top, color, _lerp(red * 0.55, haze, 0.5 * (1 - depth)), fade=0.35, shade=0.35,
                strata=0.35, grain=0.03)
    ground = _level(s.uniform(0.84, 0.9), 0.02, s.noise(2))
    s.ridge(ground, s.rgb([(190, 120, 75)]), s.rgb([(150, 85, 55)]), fade=0.15, grain=0.1)
    s.objects(shapes.rock, ground, 0.4, 0.35, s.uniform(0.02, 0.04), 0.1, s.rgb([(140, 70, 45)]))
    s.objects(shapes.bush, ground, 0.35, 0.3, s.uniform(0.02, 0.04), 0.1, s.rgb([(105, 110, 60)]))
    s.objects(shapes.cactus, ground, 0.6, 0.35, s.uniform(0.14, 0.22), 0.1, s.rgb([(70, 100, 55)]))


def _tundra(s: Scene):
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
    s.objects(shapes.rock, plain, 0.4, 0.4, s.uniform(0.01, 0.02), spread, s.rgb([(120, 118, 115)]))
    s.objects(shapes.bush, plain, 0.3, 0.4, s.uniform(0.01, 0.018), spread, s.rgb([(90, 75, 55)]))
    s.objects(shapes.conifer, plain, 1.0, 0.25, s.uniform(0.05, 0.08), spread, s.rgb([(40, 60, 45)]),
              s.rgb([(60, 45, 35)]))


def _night(s: Scene):
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


def _savanna(s: Scene):
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
    s.objects(shapes.acacia, plain, 0.2, 0.5, s.uniform(0.04, 0.06), 0.1, _lerp(tree, haze, 0.4))
    s.objects(shapes.bush, plain, 0.2, 0.3, s.uniform(0.015, 0.025), 0.25, _lerp(tree, grass, 0.3))
    s.objects(shapes.acacia, plain, 0.6, 0.6, s.uniform(0.12, 0.18), 0.25, tree, tree * 0.8)


RECIPES = {"desert": _desert, "alpine": _alpine, "forest": _forest, "coast": _coast, "canyon": _canyon,
             "tundra": _tundra, "night": _night, "savanna": _savanna}

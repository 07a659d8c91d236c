"""The built-in `landscapes` dataset: procedural, class-conditional natural scenes of any width.

Every image is a pure function of (class, seed) and of the *absolute* pixel column, so a panorama can be
rendered in chunks (`x0`) and any crop of a wide render equals a narrow render at that offset.

Lengths are measured in image heights: a pixel at row i, absolute column x sits at
y = (i + 0.5) / H (0 at the top) and u = (x + 0.5) / H, so a 32 px and a 256 px render of the same seed show
the same scene. Each layer (sky, clouds, ridges, sea, trees, rocks...) is built from hashed noise on a lattice
in u, or from objects hashed per cell along u, and every noise and cell lattice is shifted by a per-image
random phase. A lattice process is only cyclostationary; the uniform random phase makes it stationary, so the
columns of a crop at any offset are distributed exactly like those of a narrow render.

The parts, each using only those before it:
  noise.py    counter-based hashing and value noise
  scene.py    `Scene`: a batch of images of one class, its random streams and the layer primitives
  shapes.py   trees, rocks, bushes, cacti and clouds for `Scene.objects`
  recipes.py  the eight classes, each painted back to front from the primitives
  api.py      `render`, `render_batch`, `iterate_landscapes`, the class names
"""
from .api import CLASSES, MIN_HEIGHT, class_index, iterate_landscapes, render, render_batch

__all__ = ["CLASSES", "MIN_HEIGHT", "class_index", "iterate_landscapes", "render", "render_batch"]

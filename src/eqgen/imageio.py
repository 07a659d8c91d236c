"""Images at the edges: float [-1, 1] NCHW inside eqgen, uint8 PNG files outside."""
from __future__ import annotations

import io

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import EqgenError


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B,3,H,W] or [3,H,W] float in [-1, 1] -> uint8 [..., H, W, 3]."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1]."""
    # np.require copies read-only arrays (np.asarray of a PIL image is one), which torch.from_numpy warns about
    return torch.from_numpy(np.require(array, requirements=["C", "W"])).movedim(-1, -3).float() / 127.5 - 1


def load_image(path: str | Path) -> np.ndarray:
    """An image file (any format Pillow reads) -> uint8 [H, W, 3] RGB."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (OSError, ValueError) as err:
        raise EqgenError(f"cannot read image {path}: {err}") from None


def fit_image(pixels: np.ndarray, height: int, multiple: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [height, w, 3]: resized (bicubic) to `height` keeping the aspect ratio, then cropped
    on the right to a multiple of `multiple` px. An image that already fits is returned unchanged."""
    if pixels.shape[0] != height:
        width = max(1, round(pixels.shape[1] * height / pixels.shape[0]))
        pixels = np.array(Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC))
    return pixels[:, : pixels.shape[1] // multiple * multiple]


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 [H, W, 3] array encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 [H, W, 3] array as PNG, with a clear error when the place cannot be written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    except (OSError, ValueError) as err:
        raise EqgenError(f"cannot write {path}: {err.strerror if isinstance(err, OSError) and err.strerror else err}") from None
    return path


def grid(images: torch.Tensor, nrow: int, pad: int = 2) -> np.ndarray:
    """[B,3,H,W] -> one uint8 [H', W', 3] grid, `nrow` images per row, white gaps."""
    pixels = to_uint8(images)
    B, H, W, _ = pixels.shape
    rows = (B + nrow - 1) // nrow
    out = np.full((rows * (H + pad) - pad, nrow * (W + pad) - pad, 3), 255, np.uint8)
    for i, image in enumerate(pixels):
        r, c = divmod(i, nrow)
        out[r * (H + pad):r * (H + pad) + H, c * (W + pad):c * (W + pad) + W] = image
    return out


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    return save_png(grid(images, nrow), path)

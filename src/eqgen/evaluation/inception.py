"""Standard Inception-v3 features for FID, from a local file (nothing is downloaded).

The file is the TorchScript export of the TensorFlow FID Inception network that StyleGAN2-ADA, EDM and
clean-fid use (`inception-2015-12-05.pt`): it takes uint8 images [N,3,H,W] of any size, resizes them to 299²
itself, and with `return_features=True` gives the 2048-d pool features FID is defined on. TorchScript needs no
torchvision. It is a program, not plain tensors: load only a file you trust.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import EqgenError


class InceptionFeatures:
    """features = InceptionFeatures(path)(images)  # [N,3,H,W] in [-1, 1] -> [N, 2048]"""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise EqgenError(f"no Inception weights at {path} (the TorchScript inception-2015-12-05.pt)")
        try:
            with warnings.catch_warnings():   # TorchScript is deprecated, but it is the format these weights exist in
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as err:
            raise EqgenError(f"{path} is not a TorchScript Inception network: {str(err).splitlines()[0]}") from None
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        out = [self.model(chunk.to(self.device), return_features=True).float().cpu() for chunk in pixels.split(batch)]
        features = torch.cat(out)
        if features.ndim != 2:
            raise EqgenError(f"the Inception network returned features of shape {list(features.shape)}, not [N, D]")
        return features

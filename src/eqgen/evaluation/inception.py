"""Standard Inception-v3 features for FID, from a local file (nothing is downloaded).

The file is the TorchScript export of the TensorFlow FID Inception network that StyleGAN2-ADA, EDM and
clean-fid use (`inception-2015-12-05.pt`): it takes uint8 images [N,3,H,W] of any size, resizes them to 299²
itself; `return_features=True` gives the 2048-d pool features FID, precision and recall are defined on, and
`no_output_bias=True` the 1008-class probabilities without the output layer's bias, which is how the original
Inception Score (and the ADM evaluator) computes them. TorchScript needs no torchvision. It is a program, not
plain tensors: load only a file you trust.
"""
from __future__ import annotations

import hashlib
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
        self.path, self.device = path, torch.device(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return torch.cat([self.features(chunk).cpu() for chunk in pixels.split(batch)])

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [N,3,H,W] -> pool features float32 [N, D], on the network's device."""
        features = self.model(pixels.to(self.device), return_features=True).float()
        if features.ndim != 2:
            raise EqgenError(f"the Inception network returned features of shape {list(features.shape)}, not [N, D]")
        return features

    @torch.no_grad()
    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [N,3,H,W] -> class probabilities float32 [N, classes] for the Inception Score."""
        try:
            return self.model(pixels.to(self.device), no_output_bias=True).float()
        except RuntimeError as err:   # TorchScript rejects an unknown keyword as a RuntimeError
            raise EqgenError(f"{self.path} does not take no_output_bias=True, so it cannot give the Inception Score "
                             f"(not the inception-2015-12-05.pt interface): {str(err).splitlines()[0]}") from None

    def fingerprint(self) -> str:
        """The file's SHA-256: statistics saved with one network must not be compared with another's."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

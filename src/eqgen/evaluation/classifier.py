"""A landscape classifier that eqgen trains itself: the feature extractor for scores on this machine.

Inception weights cannot be downloaded here, so eqgen's own scores on the built-in landscapes use this small
CNN instead: its logits for class-correctness and IS-style scores, its pooled features for Fréchet distance
and precision/recall. Such scores are called `landscape-FID` etc., never Inception-FID. It is trained on
renders with mild blur and noise, so that it judges scenes, not the sharpness of a generator's pixels.

    eqgen eval train-classifier --out runs/classifier     # ~3 minutes on a 2-core CPU
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import Pretrained
from ..data.landscapes import CLASSES, iterate_landscapes

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "landscape_classifier"


@dataclass
class ClassifierConfig:
    num_classes: int = len(CLASSES)
    height: int = 64          # inputs are resized to this height; any width (features are pooled)
    width: int = 16           # channels of the first stage; doubled at each of 4 stages
    feature_dim: int = 128


class LandscapeClassifier(Pretrained, nn.Module):
    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = c = config
        chans = [c.width * 2 ** i for i in range(4)]
        layers, cin = [], 3
        for cout in chans:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                       nn.Conv2d(cout, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.project = nn.Linear(cin, c.feature_dim)
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B,3,H,W] in [-1, 1] -> features [B, feature_dim]."""
        if images.shape[-2] != self.config.height:
            scale = self.config.height / images.shape[-2]
            images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)
        return F.silu(self.project(self.body(images).mean(dim=(2, 3))))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    @classmethod
    def from_pretrained(cls, directory: str | Path = SHIPPED) -> "LandscapeClassifier":
        return super().from_pretrained(directory).requires_grad_(False)


def _augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur half of the images a little and add faint noise: generated images are never pixel-perfect."""
    blurred = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2.0, mode="bilinear", align_corners=False)
    pick = torch.rand(len(images), 1, 1, 1, generator=g) < 0.5
    images = torch.where(pick, blurred, images)
    return images + 0.03 * torch.randn(images.shape, generator=g)


def train_classifier(out: str | Path, steps: int = 1200, batch_size: int = 64, seed: int = 0,
                     lr: float = 2e-3) -> tuple[LandscapeClassifier, float]:
    """Train on fresh renders (64 px tall, widths 64 and 128); returns the model and its held-out accuracy."""
    torch.manual_seed(seed)
    model = LandscapeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    square, wide = iterate_landscapes(batch_size, 64, 64, seed=seed), iterate_landscapes(batch_size // 2, 64, 128, seed=seed + 1)
    for step in (bar := tqdm(range(steps), desc="classifier")):
        images, labels = next(wide if step % 2 else square)
        loss = F.cross_entropy(model(_augment(images, g)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    images, labels = next(iterate_landscapes(512, 64, 64, seed=10**6 + seed))
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == labels).float().mean())
    model.save_pretrained(out)
    return model, accuracy

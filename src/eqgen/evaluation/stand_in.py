"""A small random network with the interface of the FID Inception file, for trying the evaluation commands
where the real `inception-2015-12-05.pt` is not at hand (and for tests).

    python -m eqgen.evaluation.stand_in inception_stand_in.pt    # writes the TorchScript file

Like the real file it takes uint8 images [N,3,H,W] of any size and returns pool features [N, 2048] with
`return_features=True`, else class probabilities [N, 1008] (`no_output_bias=True` drops the output bias). Its
weights are random, so its scores rank nothing: they only show that every step of an evaluation runs. Never
report them.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class InceptionStandIn(nn.Module):
    def __init__(self, features: int = 2048, classes: int = 1008, channels: int = 64):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 4, stride=4)          # 32² -> 8²
        self.pool = nn.Conv2d(channels, features, 1)
        self.output = nn.Linear(features, classes)

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        # The real network resizes to 299²; 32² keeps the stand-in cheap on any CPU.
        x = F.interpolate(img.to(torch.float32), size=(32, 32), mode="bilinear", align_corners=False)
        x = torch.relu(self.conv((x - 128) / 128))
        features = torch.relu(self.pool(x)).mean(dim=(2, 3))    # non-negative, like Inception's pool_3
        if return_features:
            return features
        logits = F.linear(features, self.output.weight) if no_output_bias else self.output(features)
        return logits.softmax(dim=1)


def save_stand_in(path: str | Path, features: int = 2048, classes: int = 1008, seed: int = 0) -> Path:
    """Write the stand-in as TorchScript (what `--inception FILE` loads); the same seed gives the same file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InceptionStandIn(features, classes).eval()
        with torch.no_grad():   # features of Inception's magnitude (~0.4 a dimension), predictions that vary
            model.pool.weight.mul_(10.0)
            model.output.weight.mul_(5.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():   # TorchScript is deprecated, but it is the format the real weights exist in
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model).save(str(path))
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m eqgen.evaluation.stand_in OUT.pt")
    print(save_stand_in(sys.argv[1]))

"""The tokenizer's training losses (paper appendix B.2; latent diffusion's LPIPSWithDiscriminator).

    total = pixel·|x − x̂|  +  perceptual·LPIPS(x, x̂)  +  regularization·R(posterior) / pixel values
          + adversarial·λ_adapt·(−D(x̂))   (from `adversarial_start`)
          + semantic·(−cos(semantic decoder output, frozen encoder features))   (from `semantic_start`)

Every term is a mean over an image's pixel values (the official per-image sums divided by 3·H·W), so the
official weights keep their balance. Pretrained backbones (VGG16 for LPIPS, a vision encoder for alignment)
cannot be downloaded here: each loads from a local file the user gives, and is off otherwise — the log says
so once. Their architectures are written here and tested with small random weights.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_weights
from .errors import EqgenError

log = logging.getLogger("eqgen")


@dataclass
class TokenizerLossConfig:
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_weights: tuple[str, ...] = ()    # local files: torchvision vgg16 + the LPIPS heads; () = off
    regularization_weight: float = 0.01         # KL, or the official noise posterior's ½·Σ mean²
    adversarial_weight: float = 0.5
    adversarial_start: int = 5000
    adaptive_weight_max: float = 1e4
    discriminator_channels: int = 64
    discriminator_layers: int = 3
    # REPA-style negative cosine similarity (REPA's weight is 0.5; the official 5.0 weighs a summed squared
    # error instead, which the cosine's bounded range does not need).
    semantic_weight: float = 0.5
    semantic_start: int = 20000
    semantic_encoder: str | None = None         # a torch.export file: images in [-1,1] -> [B, C, h, w]; None = off

    def __post_init__(self):
        self.perceptual_weights = tuple(self.perceptual_weights)


# ---------------------------------------------------------------------------------------------------------
# Perceptual: LPIPS on VGG16 features (Zhang et al. 2018).

VGG16_BLOCKS = (2, 2, 3, 3, 3)                 # 3×3 convs per block; LPIPS taps the last ReLU of each
VGG16_WIDTHS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """Learned perceptual distance: unit-normalised VGG16 features of both images, squared differences
    weighted per channel by a 1×1 conv (the LPIPS heads), averaged over positions, summed over 5 layers.

    `self.features` has torchvision's `vgg16().features` layout, so its state dict loads as is; the heads are
    `lins.N.weight` (LPIPS files name them `linN.model.1.weight`). `widths` shrinks the network for tests."""

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS):
        super().__init__()
        layers, cin, self.slices = [], 3, []
        for block, (convs, width) in enumerate(zip(VGG16_BLOCKS, widths)):
            start = len(layers)
            if block > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs):
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU()]
                cin = width
            self.slices.append(slice(start, len(layers)))
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(w, 1, 1, bias=False) for w in widths)
        for lin in self.lins:   # until trained heads are loaded: the plain mean feature distance (≥ 0, as theirs)
            nn.init.constant_(lin.weight, 1.0 / lin.in_channels)
        # LPIPS's input scaling: images in [-1, 1] to (roughly) ImageNet statistics.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    @classmethod
    def from_files(cls, *paths: str | Path) -> "LPIPS":
        """Load VGG16 and the LPIPS heads from local files (safetensors, or `.pth` tensors-only pickles):
        torchvision's `vgg16` state dict (`features.N.*`; `classifier.*` is ignored) and LPIPS's `vgg.pth`
        (`linN.model.1.weight`), in one file or several."""
        state = {}
        for path in paths:
            state.update(_read_tensors(Path(path)))
        state = {(f"lins.{k[3]}.weight" if k.startswith("lin") else k): v for k, v in state.items()
                 if k.startswith(("features.", "lin"))}
        heads = [state.get(f"lins.{i}.weight") for i in range(len(VGG16_BLOCKS))]
        if any(h is None or h.ndim != 4 for h in heads):
            raise EqgenError(f"{', '.join(map(str, paths))}: no LPIPS heads (lin0.model.1.weight … lin4…)")
        model = cls(widths=tuple(h.shape[1] for h in heads))
        expected = model.state_dict()
        missing = [k for k in expected if k not in state]
        wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or wrong:
            raise EqgenError(f"{', '.join(map(str, paths))}: not VGG16 + LPIPS weights (missing "
                             f"{missing[:3]}, wrong shape {wrong[:3]})")
        model.load_state_dict(state, strict=False)
        return model

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image distance [B] between images in [-1, 1] (0 for identical images)."""
        h = (torch.cat([a, b]) - self.shift) / self.scale   # one pass for both images
        total = 0.0
        for part, lin in zip(self.slices, self.lins):
            h = self.features[part](h)
            fa, fb = _unit(h).chunk(2)
            total = total + lin((fa - fb).pow(2)).mean(dim=(1, 2, 3))
        return total


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_weights(path)
    if not path.is_file():
        raise EqgenError(f"{path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not tensors-only: refuse rather than unpickle arbitrary objects
        raise EqgenError(f"{path} is not a tensors-only weights file ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise EqgenError(f"{path} does not hold a state dict")
    return state


# ---------------------------------------------------------------------------------------------------------
# Adversarial: a PatchGAN discriminator (pix2pix; taming's NLayerDiscriminator), hinge loss, adaptive weight.


class PatchDiscriminator(nn.Module):
    """Real/fake logits for overlapping patches: 4×4 convs (stride 2, then 1), BatchNorm, LeakyReLU 0.2."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3):
        super().__init__()
        seq, width = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)], channels
        for n in range(1, layers + 1):
            out = channels * min(2**n, 8)
            seq += [nn.Conv2d(width, out, 4, 2 if n < layers else 1, 1, bias=False), nn.BatchNorm2d(out),
                    nn.LeakyReLU(0.2)]
            width = out
        seq.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.main = nn.Sequential(*seq)
        # pix2pix's initialisation: N(0, 0.02) convs, N(1, 0.02) norm scales.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Zero once real logits are ≥ 1 and fake ones ≤ −1."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def adaptive_weight(nll: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """‖∇nll‖ / ‖∇adversarial‖ at the decoder's last layer, clamped to [0, max_weight] and detached: the
    adversarial gradient then arrives at the same scale as the reconstruction's (latent diffusion)."""
    g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    return (g_nll.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, max_weight).detach()


# ---------------------------------------------------------------------------------------------------------
# Semantic alignment (REPA): the semantic decoder's output agrees with a frozen vision encoder.


def semantic_alignment(semantic: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """−cos between the semantic output [B, C, h, w] and the encoder's features [B, C, h', w'] brought to the
    same grid (averaged over cells when finer, bilinear when coarser); the mean over positions, in [−1, 1]."""
    if semantic.shape[1] != target.shape[1]:
        raise EqgenError(f"the semantic decoder gives {semantic.shape[1]} channels but the vision encoder "
                         f"{target.shape[1]}: set the tokenizer's semantic_dim to {target.shape[1]}")
    grid = semantic.shape[-2:]
    if target.shape[-2] >= grid[0] and target.shape[-1] >= grid[1]:
        target = F.adaptive_avg_pool2d(target, grid)
    else:
        target = F.interpolate(target, size=grid, mode="bilinear", align_corners=False)
    return -F.cosine_similarity(semantic, target, dim=1).mean()


def load_vision_encoder(path: str | Path) -> nn.Module:
    """A frozen vision encoder from a `torch.export` archive (.pt2): any model mapping images in [-1, 1] to
    patch features [B, C, h, w], exported in eval mode, e.g. with the batch and width dynamic:
    `torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes=...), "encoder.pt2")`.
    An archive holds a graph and tensors, no Python pickles."""
    path = Path(path)
    if not path.is_file():
        raise EqgenError(f"vision encoder {path} not found")
    try:
        encoder = torch.export.load(path).module()
    except Exception as err:
        raise EqgenError(f"{path} is not a torch.export archive ({type(err).__name__})") from None
    return encoder.requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------
# All of it, as configured


class TokenizerLoss(nn.Module):
    """The configured losses. `autoencoder_loss` for the tokenizer's optimiser, `discriminator_loss` for the
    discriminator's. Backbones are built from local files; a loss whose backbone is missing is off."""

    def __init__(self, config: TokenizerLossConfig, lpips: LPIPS | None = None,
                 vision_encoder: nn.Module | None = None):
        super().__init__()
        self.config = c = config
        if lpips is None and c.perceptual_weight > 0:
            if c.perceptual_weights:
                paths = c.perceptual_weights
                lpips = LPIPS.from_files(*([paths] if isinstance(paths, (str, Path)) else paths))
            else:
                log.warning("eqgen: perceptual loss off: no local VGG16/LPIPS weights given (perceptual_weights)")
        if vision_encoder is None and c.semantic_weight > 0:
            if c.semantic_encoder:
                vision_encoder = load_vision_encoder(c.semantic_encoder)
            else:
                log.warning("eqgen: semantic alignment off: no local vision encoder given (semantic_encoder)")
        self.lpips = lpips if c.perceptual_weight > 0 else None
        self.vision_encoder = vision_encoder if c.semantic_weight > 0 else None
        self.discriminator = (PatchDiscriminator(3, c.discriminator_channels, c.discriminator_layers)
                              if c.adversarial_weight > 0 else None)

    def autoencoder_loss(self, images, recon, regularization, semantic, step: int,
                         last_layer: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The tokenizer's loss and its parts. `regularization` is the posterior's per-image sum [B],
        `semantic` the semantic decoder's output (or None), `last_layer` the decoder's last weight."""
        c = self.config
        pixel = (recon - images).abs().mean()
        nll = c.pixel_weight * pixel
        parts = {"pixel_l1": pixel.item()}
        if self.lpips is not None:
            perceptual = self.lpips(recon, images).mean()
            nll = nll + c.perceptual_weight * perceptual
            parts["perceptual"] = perceptual.item()
        reg = regularization.mean() / images[0].numel()
        loss = nll + c.regularization_weight * reg
        parts["regularization"] = reg.item()
        if self.vision_encoder is not None and step >= c.semantic_start:
            if semantic is None:
                raise EqgenError("semantic alignment needs a tokenizer with a semantic decoder (semantic_widths)")
            with torch.no_grad():
                target = self.vision_encoder(images).float()
            align = semantic_alignment(semantic, target)
            loss = loss + c.semantic_weight * align
            parts["semantic"] = align.item()
        if self.discriminator is not None and step >= c.adversarial_start:
            # The plain module, frozen: this step trains the tokenizer only (and a DDP wrapper would wait
            # for discriminator gradients that never come).
            self.discriminator.requires_grad_(False)
            g_loss = hinge_generator_loss(self.discriminator(recon))
            self.discriminator.requires_grad_(True)
            weight = adaptive_weight(nll, g_loss, last_layer, c.adaptive_weight_max)
            loss = loss + c.adversarial_weight * weight * g_loss
            parts.update(adversarial=g_loss.item(), adaptive_weight=weight.item())
        return loss, parts

    def discriminator_loss(self, images, recon, discriminator: nn.Module | None = None) -> torch.Tensor:
        """The hinge loss of `discriminator` (the DDP-wrapped one when distributed; default: our own)."""
        disc = discriminator or self.discriminator
        return hinge_discriminator_loss(disc(images), disc(recon.detach()))

"""Training the column tokenizer (paper appendix B.2) on the shared loop of `training.py`.

Adam β=(0.5, 0.9) (the official; the demo preset's L1-only training takes (0.9, 0.99)); linear warm-up, then
×0.2 every `decay_every` steps; gradient clip 1.0; EMA (the exported weights). The losses and their weights
are `losses.TokenizerLossConfig`; the PatchGAN discriminator has its own Adam. `decoder_only` is the official
second stage: start from a trained tokenizer (`init_from`), freeze the encoder side, and fine-tune the
decoder, its semantic head and the token un-projection. Every evaluation logs the held-out PSNR and writes a
PNG of originals over reconstructions (wide renders for the landscapes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from .configs import from_dict, from_preset, to_dict
from .data.sources import ImageSource
from .errors import EqgenError
from .imageio import save_grid
from .losses import TokenizerLoss, TokenizerLossConfig
from .pipeline import load_tokenizer
from .tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig
from .resume import resumed_config
from .training import RunConfig, Task, clip_and_step, fit, warmup_lr


@dataclass
class TokenizerTrainConfig:
    lr: float = 1.92e-4
    betas: tuple[float, float] = (0.5, 0.9)
    warmup_steps: int = 5000
    decay_every: int = 30000                    # ×decay_factor every this many steps after warm-up; 0 = never
    decay_factor: float = 0.2
    grad_clip: float = 1.0
    decoder_only: bool = False                  # the second stage; needs init_from
    init_from: str | None = None                # a tokenizer directory, or a pipeline's, to start from
    image_width: int = 0                        # training image width in pixels; 0 = square
    eval_images: int = 64                       # held-out images for the PSNR at each evaluation
    eval_wide: int = 8                          # the PNG's landscapes are this many heights wide
    losses: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise EqgenError(f"Adam betas must be two numbers in [0, 1), got {self.betas}")
        if self.decay_every < 0:
            raise EqgenError(f"decay_every must be ≥ 0 (0 = never), got {self.decay_every}")
        if isinstance(self.losses, dict):   # from a preset or from JSON
            self.losses = from_dict(TokenizerLossConfig, self.losses)
        if self.decoder_only and not self.init_from:
            raise EqgenError("decoder-only training fine-tunes a trained tokenizer: give init_from (its directory)")


TOKENIZER_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # The built-in landscapes on a CPU: no pretrained backbones, so pixel L1 + regulariser + PatchGAN.
    # β=(0.9, 0.99) instead of the official (0.5, 0.9), made for the GAN phase: with L1 alone, 600 steps of
    # batch 16 end 0.5 dB higher in training PSNR (23.2 against 22.7 dB), as far as (0.5, 0.9) gets in ~900.
    "demo": dict(lr=5e-4, betas=(0.9, 0.99), warmup_steps=200, decay_every=4000, image_width=128,
                 losses=dict(adversarial_start=2000, discriminator_channels=32, semantic_weight=0.0)),
    "tiny": dict(lr=2e-3, warmup_steps=5, decay_every=0, image_width=32, eval_images=8, eval_wide=4,
                 losses=dict(perceptual_weight=0.0, adversarial_weight=0.0, semantic_weight=0.0)),
}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-image peak signal-to-noise ratio (dB) of images in [-1, 1]."""
    mse = (a.clamp(-1, 1) - b.clamp(-1, 1)).pow(2).flatten(1).mean(1) / 4   # as if in [0, 1]
    return float((10 * torch.log10(1 / mse.clamp_min(1e-12))).mean())


class TokenizerTask(Task):
    kind = "tokenizer"
    # The optimizer's settings and the evaluation's may change on resume; the data and the losses may not.
    changeable = frozenset({"lr", "betas", "warmup_steps", "decay_every", "decay_factor", "grad_clip",
                            "eval_images", "eval_wide"})
    # The semantic decoder gets gradients only while its alignment loss is on (from semantic_start, with a
    # vision encoder), so under DDP some parameters sit out some steps.
    find_unused_parameters = True

    def __init__(self, tokenizer: ColumnTokenizer, source: ImageSource, train: TokenizerTrainConfig, run: RunConfig):
        self.model, self.source, self.train, self.run = tokenizer, source, train, run
        self.loss = TokenizerLoss(train.losses)
        if train.decoder_only:
            for part in (tokenizer.encoder, tokenizer.quant_layer):
                part.requires_grad_(False)

    def modules(self):
        disc = self.loss.discriminator
        return {"model": self.model} | ({"discriminator": disc} if disc is not None else {})

    def optimizers(self):
        t = self.train
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=t.lr, betas=t.betas)
        # The schedule drives the tokenizer; the discriminator keeps its rate (as in the official code).
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_lr(t.warmup_steps, t.decay_every, t.decay_factor))
        opts = {"model": self.opt}
        if self.loss.discriminator is not None:
            self.opt_d = opts["discriminator"] = torch.optim.Adam(self.loss.discriminator.parameters(), lr=t.lr,
                                                                  betas=t.betas)
        return opts

    def schedulers(self):
        return {"model": self.sched}

    def batches(self, start: int) -> Iterator[torch.Tensor]:
        for images, _ in self.source.batches(self.run.batch_size, start, self.rank, self.world_size):
            yield images

    def training_step(self, images: torch.Tensor, step: int) -> dict[str, float]:
        self.loss.to(self.device)   # the frozen backbones (a no-op after the first step)
        images = images.to(self.device)
        with self.autocast():
            recon, moments, semantic = self.wrapped["model"](images)
            loss, metrics = self.loss.autoencoder_loss(images, recon, self.model.regularization(moments), semantic,
                                                       step, self.model.decoder.conv_out.weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        metrics["grad_norm"] = clip_and_step(self.opt, self.train.grad_clip)
        self.sched.step()
        if "adversarial" in metrics:   # from adversarial_start on, the discriminator learns too
            with self.autocast():
                d_loss = self.loss.discriminator_loss(images, recon, self.wrapped["discriminator"])
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            clip_and_step(self.opt_d, self.train.grad_clip)
            metrics["discriminator"] = d_loss.item()
        return {"loss": loss.item(), **metrics, "psnr": psnr(recon.detach().float(), images)}

    # -- evaluation ---------------------------------------------------------------------------------------

    def held_out(self) -> torch.Tensor:
        if not hasattr(self, "_held_out"):
            self._held_out = self.source.held_out(self.train.eval_images)
        return self._held_out

    @torch.no_grad()
    def evaluate(self, ema_model: ColumnTokenizer, step: int, out: Path) -> dict[str, float]:
        images = self.held_out().to(self.device)
        recon = torch.cat([ema_model.decode(ema_model.encode(chunk)) for chunk in images.split(16)])
        metrics = {"eval_psnr": psnr(recon, images)}
        if self.source.folder is None:  # landscapes render at any width: show (and score) wide ones
            images = self.source.held_out(4, width=self.train.eval_wide * self.source.height).to(self.device)
            recon = ema_model.decode(ema_model.encode(images))
            metrics["eval_wide_psnr"] = psnr(recon, images)
        save_grid(torch.cat([images[:4], recon[:4]]), out / "reconstructions" / f"step_{step:07d}.png", nrow=1)
        return metrics

    def settings(self) -> dict[str, Any]:
        return {**to_dict(self.train), "data": self.source.spec}

    def export_config(self, ema_model: ColumnTokenizer) -> dict[str, Any]:
        """The config with the latent scale of these weights, so every checkpoint is a tokenizer directory. A
        decoder-only stage keeps the scale it started from: generators on its tokens were trained with it."""
        if not self.train.decoder_only:
            ema_model.config.latent_scale = measure_latent_scale(ema_model, self.held_out().to(self.device))
        return to_dict(ema_model.config)


@torch.no_grad()
def measure_latent_scale(tokenizer: ColumnTokenizer, images: torch.Tensor) -> float:
    """1 / std of the posterior means: the factor that gives the generator unit-variance targets."""
    tokens = torch.cat([tokenizer.encode(chunk) for chunk in images.split(16)])
    return float(1.0 / tokens.std())


def train_tokenizer(data: str, out: str | Path, run: RunConfig, preset: str = "demo", resume: bool = False,
                    train: TokenizerTrainConfig | None = None, **overrides: Any) -> ColumnTokenizer:
    """`eqgen train tokenizer`: --out becomes a tokenizer directory (config.json + model.safetensors, the EMA
    weights), at every checkpoint, with the latent scale measured on held-out images (see `export_config`).
    `overrides` are TokenizerConfig fields (None = not given)."""
    out = Path(out)
    given = {k: v for k, v in overrides.items() if v is not None}
    presets = TOKENIZER_TRAIN_PRESETS
    train = train or from_preset(TokenizerTrainConfig, presets, preset if preset in presets else "paper")
    start = load_tokenizer(train.init_from) if train.init_from else None
    if start is not None:
        config = from_dict(TokenizerConfig, {**to_dict(start.config), **given})
    else:
        config = from_preset(TokenizerConfig, TOKENIZER_PRESETS, preset, **given)
    if resume:   # the run's own config, which must be the one asked for (its latent scale is measured)
        config = resumed_config(TokenizerConfig, out, config, ignore=("latent_scale",))
    source = ImageSource(data, config.height, train.image_width or config.height, seed=run.seed)
    torch.manual_seed(run.seed)
    tokenizer = ColumnTokenizer(config)
    if start is not None and not resume:   # a trained tokenizer's weights; `overrides` may change what keeps them
        tokenizer.load_state_dict(start.state_dict())
    return fit(TokenizerTask(tokenizer, source, train, run), run, out, resume=resume)

"""Training the generator on cached tokens (paper §3.2, appendix B.3).

AdamW β=(0.9, 0.95), weight decay 0.02, lr = base × global batch / 256 with linear warm-up then constant,
gradient clip 3.0, EMA; label dropout and the random RoPE shift live in the model itself. The batch of step k
is a function of (seed, k, rank): rows of the token cache and, for `crops != "edge"`, a random horizontal
offset into each row.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .checkpoint import CONFIG, WEIGHTS, load_fitting, model_files
from .configs import from_dict, from_preset, to_dict
from .data.sources import ImageSource
from .errors import EqgenError
from .files import commit_files, json_bytes
from .generator import GENERATOR_PRESETS, EquivariantGenerator, GeneratorConfig
from .pipeline import Pipeline, load_tokenizer, pipeline_config
from .token_cache import TokenCache, build_token_cache
from .devices import resolve_device
from .resume import resumed_config
from .training import RunConfig, Task, clip_and_step, fit, warmup_lr

CROPS = ("edge", "interior", "equivariant")


@dataclass
class GeneratorTrainConfig:
    lr: float = 1e-4                  # per 256 images (the paper's rule); the optimizer gets lr × batch / 256
    weight_decay: float = 0.02
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    grad_clip: float = 3.0
    seq_len: int = 0                  # tokens per training sequence; 0 = the cached rows' full length
    # Where a training sequence starts in a cached row:
    #   edge         always at the row's first column (the official setting: every sequence starts at the
    #                image's left edge, so a model can learn its distance from that edge);
    #   interior     at a random column, so the first token is usually not an edge and nothing tells the
    #                model where the image began (the remedy for drift on long images);
    #   equivariant  crops of `window + 1` tokens at random columns (the paper's "real equivariant" variant).
    crops: str = "interior"
    train_positions: list[int] | None = None  # the loss only at these positions (paper Table 1); None = all
    init_from: str | None = None      # a pipeline directory (or "builtin") whose generator weights to start from

    def __post_init__(self):
        if self.crops not in CROPS:
            raise EqgenError(f"unknown --crops {self.crops!r}; choose one of {', '.join(CROPS)}")


# Training recipes by preset name (the model shapes live in GENERATOR_PRESETS). The paper's recipe is the
# default; the demo one is for a 45-minute CPU run, where a higher learning rate pays off.
GENERATOR_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "demo": dict(lr=8e-3, warmup_steps=200, seq_len=32),
    "tiny": dict(lr=4e-2, warmup_steps=5, seq_len=8),
}


class GeneratorTask(Task):
    """The run directory is a pipeline directory: `prepare` writes the tokenizer and the generator's config,
    every checkpoint the generator's weights and the pipeline's config.json."""

    kind = "generator"
    weights_name = f"generator/{WEIGHTS}"
    # Runs before the pipeline's sub-folders kept the weights beside config.json; a resume moves them.
    obsolete = ("tokenizer.safetensors", "generator.safetensors")
    # The optimizer's settings may change on resume; what decides the sequences trained on may not.
    changeable = frozenset({"lr", "weight_decay", "betas", "warmup_steps", "grad_clip"})

    def __init__(self, generator, cache: TokenCache, train: GeneratorTrainConfig, run: RunConfig, tokenizer):
        self.model, self.cache, self.train, self.run, self.tokenizer = generator, cache, train, run, tokenizer
        window = generator.config.window
        if train.crops == "equivariant":
            if window is None:
                raise EqgenError("--crops equivariant needs a windowed model (--window N)")
            self.seq_len = window + 1
        else:
            self.seq_len = train.seq_len or cache.length
        if self.seq_len > cache.length:
            raise EqgenError(f"--seq-len {self.seq_len} is longer than the cached rows ({cache.length} tokens); "
                             "rebuild the cache from wider images")
        self.position_mask = None
        if train.train_positions is not None:
            bad = [p for p in train.train_positions if not 0 <= p < self.seq_len]
            if bad:
                raise EqgenError(f"--train-positions {bad} outside 0..{self.seq_len - 1}")
            self.position_mask = torch.zeros(self.seq_len, dtype=torch.bool)
            self.position_mask[train.train_positions] = True

    def optimizers(self):
        lr = self.train.lr * self.run.batch_size * self.world_size / 256
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            # Matrices decay; biases, norms and embeddings-as-vectors do not (the MAR/timm convention).
            (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.train.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=self.train.betas)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_lr(self.train.warmup_steps))
        return {"generator": self.opt}

    def schedulers(self):
        return {"generator": self.sched}

    def batches(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rows = self.cache.part(self.rank, self.world_size)
        if len(rows) == 0:
            raise EqgenError("the token cache has fewer rows than processes")
        spare = self.cache.length - self.seq_len
        for step in range(start, 2**62):
            rng = np.random.default_rng([self.run.seed, step, self.rank])
            picked = rng.integers(rows.start, rows.stop, self.run.batch_size)
            offsets = rng.integers(0, spare + 1, self.run.batch_size) if self.train.crops != "edge" and spare \
                else np.zeros(self.run.batch_size, dtype=np.int64)
            yield self.cache.rows(picked, offsets, self.seq_len)

    def training_step(self, batch, step: int) -> dict[str, float]:
        means, labels = (t.to(self.device) for t in batch)
        tokens = self.tokenizer.sample(means) * self.tokenizer.config.latent_scale
        mask = None if self.position_mask is None else self.position_mask.to(self.device)
        with self.autocast():
            loss = self.wrapped["model"](tokens, labels, position_mask=mask)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_and_step(self.opt, self.train.grad_clip)
        self.sched.step()
        return {"loss": loss.item(), "grad_norm": grad_norm}

    def settings(self) -> dict[str, Any]:
        return to_dict(self.train)

    def prepare(self, out: Path) -> None:
        commit_files(out, {**model_files(to_dict(self.tokenizer.config), self.tokenizer.state_dict(), "tokenizer"),
                           f"generator/{CONFIG}": json_bytes(to_dict(self.model.config))})

    def export_config(self, ema_model) -> dict[str, Any]:
        return {**pipeline_config(self.cache.classes), "training": to_dict(self.train), "run": to_dict(self.run)}


def default_cache_dir(out: str | Path) -> Path:
    return Path(out) / "token_cache"


def train_generator(tokenizer_dir: str | Path, data: str, out: str | Path, run: RunConfig,
                    train: GeneratorTrainConfig, preset: str = "demo", resume: bool = False,
                    cache_dir: str | Path | None = None, cache_images: int = 20_000, cache_width: int | None = None,
                    **model_overrides: Any):
    """`eqgen train generator`: encode the data once into a token cache, then train; `out` becomes a pipeline
    directory (tokenizer/, generator/, config.json) that `Pipeline.from_pretrained` and every `--model` option
    load. `tokenizer_dir`: a tokenizer directory, or a pipeline directory whose tokenizer to use."""
    out = Path(out)
    tokenizer = load_tokenizer(tokenizer_dir)
    height = tokenizer.config.height
    source = ImageSource(data, height, cache_width or height, seed=run.seed)
    cache = build_token_cache(tokenizer, source, cache_dir or default_cache_dir(out), cache_images,
                              device=resolve_device(run.device))
    start = None
    if train.init_from:   # a trained model's shapes and weights; `model_overrides` may change what keeps them
        pretrained = Pipeline.from_pretrained(train.init_from)
        start = pretrained.generator
        config = from_dict(GeneratorConfig, {**to_dict(start.config), **model_overrides})
        if config.token_dim != cache.token_dim or pretrained.classes != cache.classes:
            raise EqgenError(f"{train.init_from} models {config.token_dim}-channel tokens of classes "
                             f"{', '.join(pretrained.classes)}; the data gives {cache.token_dim} channels and classes "
                             f"{', '.join(cache.classes)}")
    else:
        config = from_preset(GeneratorConfig, GENERATOR_PRESETS, preset, token_dim=cache.token_dim,
                             num_classes=len(cache.classes), **model_overrides)
    if resume:   # the run's own config, which must be the one asked for (in config.json in earlier runs)
        config = (resumed_config(GeneratorConfig, out / "generator", config) if (out / "generator" / CONFIG).exists()
                  else resumed_config(GeneratorConfig, out, config, section="generator"))
    torch.manual_seed(run.seed)
    generator = EquivariantGenerator(config)
    if start is not None and not resume:
        load_fitting(generator, start.state_dict(), str(train.init_from), "does not fit the configured generator")
    return fit(GeneratorTask(generator, cache, train, run, tokenizer), run, out, resume=resume)

"""The experiments of `eqgen report`: train every variant, measure it, keep the results in OUT/results.json.

Every experiment trains the `demo` generator for the same steps and batch on a token cache of 64×128
landscapes (16 tokens, like the paper's 256² images), every sequence starting at the image's left edge as in
the official code, and is then measured the same way:

- landscape-FID and class accuracy of samples at the training length (eqgen's landscape classifier as the
  feature extractor: comparable between these runs, not with Inception-FID);
- the flow-matching loss per position on held-out renders (teacher forcing, shared noise draws);
- for the long-image experiment, per-offset statistics of 8× wide panoramas against ground-truth renders.

The 2-D grid baseline (paper Table 3, AR-MAR-2D) uses the same autoencoder trunk with tokens cut as a 4×4
grid of patches in raster order (`ColumnTokenizer` with grid_rows=4) and full causal attention. Both
tokenizers start from the built-in model's and are fine-tuned for the same steps, so the token layout is the
only difference between them.

Results are written as they come: a rerun skips finished experiments and resumes an interrupted training.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..checkpoint import load_training_state
from ..configs import from_preset
from ..errors import EqgenError
from ..files import load_json, save_json
from ..evaluation.costs import attention_gflops, generator_costs
from ..evaluation.long_images import drift_table, ground_truth, offset_stats
from ..evaluation.positions import held_out_tokens, position_losses
from ..evaluation.scores import landscape_scores, tokenizer_scores
from ..generator_training import GENERATOR_TRAIN_PRESETS, GeneratorTrainConfig, train_generator
from ..pipeline import Pipeline
from ..tokenizer_training import TOKENIZER_TRAIN_PRESETS, TokenizerTrainConfig, train_tokenizer
from ..training import RunConfig

TOKENS = 16                       # tokens per image: 64×128 px, as the paper's 16 tokens of a 256² image
GRID_ROWS = 4                     # the 2-D baseline: 4×4 patches
EVEN = list(range(0, TOKENS, 2))  # the 8 of 16 positions of the zero-shot experiment (paper Table 1)

# name -> (tokens, generator training options). "tokens" picks the tokenizer: columns or the 2-D grid.
EXPERIMENTS: dict[str, tuple[str, dict]] = {
    "window": ("columns", {}),                                         # the paper's model: window 3
    "window, 8 of 16 positions": ("columns", {"train_positions": EVEN}),
    "window, position 8 only": ("columns", {"train_positions": [8]}),
    "full causal": ("columns", {"window": None}),
    "real equivariant": ("columns", {"crops": "equivariant"}),
    "window, no RoPE shift": ("columns", {"rope_shift": 1}),
    "2-D grid": ("grid", {"window": None}),
    "2-D grid, 8 of 16 positions": ("grid", {"window": None, "train_positions": EVEN}),
}


@dataclass
class ReportConfig:
    steps: int = 800                  # generator steps per experiment
    batch: int = 32
    tokenizer_steps: int = 300        # fine-tuning steps of each tokenizer
    cache_images: int = 1000          # renders in each token cache (×2 with flips)
    per_class: int = 16               # samples per class for the landscape scores
    held_out: int = 8                 # held-out renders per class for the per-position loss
    long_multiple: int = 8            # panorama width in training widths, for the RoPE-shift experiment
    long_per_class: int = 2
    seed: int = 0
    experiments: list[str] = field(default_factory=lambda: list(EXPERIMENTS))

    def __post_init__(self):
        for name in ("steps", "batch", "tokenizer_steps", "cache_images", "held_out", "long_multiple", "long_per_class"):
            if getattr(self, name) < 1:
                raise EqgenError(f"the report needs {name} ≥ 1, got {getattr(self, name)}")
        if self.per_class < 2:
            raise EqgenError(f"the report needs per_class ≥ 2 (a covariance), got {self.per_class}")


def early_steps(steps: int) -> int:
    """When the 'window' run is also measured: a quarter of the way in, and after one step at least."""
    return max(1, steps // 4)


class Results:
    """OUT/results.json, written after every finished step so that a rerun continues."""

    def __init__(self, path: Path):
        self.path = path
        self.data = load_json(path) if path.exists() else {}

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __getitem__(self, key: str):
        return self.data[key]

    def __setitem__(self, key: str, value) -> None:
        self.data[key] = value
        save_json(self.path, self.data, sort_keys=False)   # in the order the experiments ran


def _tokenizers(cfg: ReportConfig, out: Path, results: Results) -> dict[str, Path]:
    """The column and grid tokenizers, both fine-tuned from the built-in model's for the same steps."""
    dirs = {}
    for layout, grid_rows in (("columns", 0), ("grid", GRID_ROWS)):
        dirs[layout] = directory = out / "tokenizers" / layout
        if f"tokenizer {layout}" in results:
            continue
        train = from_preset(TokenizerTrainConfig, TOKENIZER_TRAIN_PRESETS, "demo", init_from="builtin",
                            warmup_steps=20)
        train.losses.adversarial_start = 10**9
        run = RunConfig(steps=cfg.tokenizer_steps, batch_size=16, seed=cfg.seed, ema_decay=0.99,
                        save_every=cfg.tokenizer_steps, log_every=50)
        started = time.time()
        tokenizer = train_tokenizer("landscapes", directory, run, train=train, grid_rows=grid_rows)
        results[f"tokenizer {layout}"] = {**tokenizer_scores(tokenizer, width_tokens=TOKENS, seed=cfg.seed),
                                          "seconds": time.time() - started,
                                          "latent_scale": tokenizer.config.latent_scale}
    return dirs


def _train(cfg: ReportConfig, out: Path, tokenizer: Path, cache: Path, options: dict, steps: int) -> Path:
    options = dict(options)
    model = {k: options.pop(k) for k in ("window", "rope_shift") if k in options}
    train = from_preset(GeneratorTrainConfig, GENERATOR_TRAIN_PRESETS, "demo",
                        **{"crops": "edge", "seq_len": TOKENS, **options})
    run = RunConfig(steps=steps, batch_size=cfg.batch, seed=cfg.seed, ema_decay=0.99, save_every=steps,
                    log_every=50)
    resume = (out / "training_state.pt").exists()
    if resume and load_training_state(out)["step"] >= steps:   # finished before an interruption
        return out
    train_generator(tokenizer, "landscapes", out, run, train, preset="demo", resume=resume,
                    cache_dir=cache, cache_images=cfg.cache_images, cache_width=TOKENS * 8, train_tokens=TOKENS,
                    **model)
    return out


def _position_losses(cfg: ReportConfig, pipe: Pipeline) -> tuple[np.ndarray, np.ndarray]:
    return position_losses(pipe.generator, *held_out_tokens(pipe, cfg.held_out, TOKENS), seed=cfg.seed)


def _measure(cfg: ReportConfig, pipe: Pipeline) -> dict:
    loss, error = _position_losses(cfg, pipe)
    scores = landscape_scores(pipe, per_class=cfg.per_class, seed=cfg.seed)
    return {"position_loss": loss.tolist(), "position_loss_se": error.tolist(), **scores}


def long_images(cfg: ReportConfig, pipe: Pipeline) -> list[dict]:
    """Per-offset drift of panoramas `long_multiple` training widths wide: each class against renders of that
    class, then the mean over the classes."""
    window = TOKENS * pipe.token_width
    width = window * cfg.long_multiple
    tables = []
    for cls in pipe.classes:
        generated = np.stack([pipe.panorama(cls, width, seed=cfg.seed + i, progress=False)
                              for i in range(cfg.long_per_class)])
        truth = ground_truth(cls, max(cfg.long_per_class, 4), width, pipe.height)
        tables.append(drift_table(offset_stats(generated, window), offset_stats(truth, window)))
    return [{key: float(np.mean([t[k][key] for t in tables])) for key in tables[0][k]} for k in range(len(tables[0]))]


def run_experiments(cfg: ReportConfig, out: str | Path) -> Results:
    """Train and measure every experiment of `cfg.experiments`; finished ones (in OUT/results.json) are kept."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out / "results.json")
    results["config"] = asdict(cfg)
    results["cpus"] = os.cpu_count()
    tokenizers = _tokenizers(cfg, out, results)
    for name in cfg.experiments:
        if name in results:
            continue
        layout, options = EXPERIMENTS[name]
        directory = out / "runs" / name.replace(" ", "_").replace(",", "")
        cache = out / f"cache_{layout}"
        started = time.time()
        record = {}
        if name == "window":  # also measured a quarter of the way in: the relative improvement per position
            _train(cfg, out=directory, tokenizer=tokenizers[layout], cache=cache, options=options,
                   steps=early_steps(cfg.steps))
            record["early_position_loss"] = _position_losses(cfg, Pipeline.from_pretrained(directory))[0].tolist()
        _train(cfg, directory, tokenizers[layout], cache, options, cfg.steps)
        pipe = Pipeline.from_pretrained(directory)
        record["train_seconds"] = time.time() - started
        record.update(_measure(cfg, pipe))
        if name in ("window", "window, no RoPE shift"):
            record["long"] = long_images(cfg, pipe)
        record["attention_gflops"] = attention_gflops(pipe.generator.config, TOKENS)
        record["gflops"] = generator_costs(pipe.generator.config, TOKENS)
        record["seconds"] = time.time() - started
        results[name] = record
    return results

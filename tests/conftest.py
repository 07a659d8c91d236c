import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from eqgen import Pipeline
from eqgen.configs import from_preset, to_dict
from eqgen.generator import GENERATOR_PRESETS, EquivariantGenerator, GeneratorConfig
from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig


def make_tiny_pipeline() -> Pipeline:
    """Randomly initialised tiny tokenizer + generator (4 classes a..d); the flow head is nudged off its zero
    initialisation so that samples depend on the seed."""
    torch.manual_seed(0)
    tokenizer = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, "tiny", latent_scale=0.5))
    generator = EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, "tiny", token_dim=4))
    with torch.no_grad():
        for p in generator.head.parameters():
            p += 0.05 * torch.randn_like(p)
    return Pipeline(tokenizer, generator, ["a", "b", "c", "d"])


def save_flat_pipeline(pipe: Pipeline, directory: Path) -> Path:
    """`pipe` in the layout of pipeline directories before the sub-folders (the shipped model's, earlier runs'):
    both configs in config.json, beside tokenizer.safetensors and generator.safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, module in (("tokenizer", pipe.tokenizer), ("generator", pipe.generator)):
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, directory / f"{name}.safetensors")
    config = {"tokenizer": to_dict(pipe.tokenizer.config), "generator": to_dict(pipe.generator.config),
              "classes": pipe.classes}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return make_tiny_pipeline()


# Tests are many small ops: one thread each is fastest, and keeps a busy 2-core machine responsive.
# EQGEN_TEST_THREADS=N runs them on N (`.ci/run` repeats the parity tests so, under other kernels).
torch.set_num_threads(int(os.environ.get("EQGEN_TEST_THREADS", "1")))

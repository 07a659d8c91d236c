"""`eqgen train generator`: token cache, crops, a loss that falls, exact resume, the pipeline directory."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from eqgen import Pipeline
from eqgen.configs import from_preset
from eqgen.data.sources import ImageSource
from eqgen.errors import EqgenError
from eqgen.generator_training import GeneratorTrainConfig, train_generator
from eqgen.token_cache import TokenCache, build_token_cache
from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig
from eqgen.tokenizer_training import measure_latent_scale
from eqgen.training import RunConfig


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tok")
    tokenizer = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, "tiny"))
    images = ImageSource("landscapes", 16, 64).held_out(16)
    tokenizer.config.latent_scale = measure_latent_scale(tokenizer, images)  # unit-variance tokens, as after training
    tokenizer.save_pretrained(directory)
    return directory


def test_token_cache_holds_images_and_their_mirrors(tokenizer_dir, tmp_path):
    tokenizer = ColumnTokenizer.from_pretrained(tokenizer_dir)
    source = ImageSource("landscapes", 16, 64, seed=1)
    cache = build_token_cache(tokenizer, source, tmp_path / "c", num_images=10, batch_size=4, shard_size=8)
    assert len(cache) == 20 and cache.length == 16 and cache.token_dim == 4
    assert len(list((tmp_path / "c").glob("tokens_*.npy"))) > 1  # several shards, read as one
    tokens, labels = cache.rows(np.array([0, 19]), np.array([2, 5]), length=8)
    assert tokens.shape == (2, 8, 4) and tokens.dtype == torch.float32
    images, y = next(source.batches(4))
    with torch.no_grad():
        expected = tokenizer.encode(images[:1])
    torch.testing.assert_close(cache.rows(np.array([0]))[0], expected.half().float())
    assert labels[0] == y[0]
    again = build_token_cache(tokenizer, source, tmp_path / "c", num_images=10, batch_size=4)  # reused
    assert len(again) == 20
    with pytest.raises(EqgenError, match="other data"):
        build_token_cache(tokenizer, ImageSource("landscapes", 16, 64, seed=2), tmp_path / "c", num_images=10)
    assert TokenCache(tmp_path / "c").part(1, 2) == range(10, 20)


def _losses(out):
    return [json.loads(l)["loss"] for l in (out / "metrics.jsonl").read_text().splitlines() if "loss" in l]


def _train(tokenizer_dir, out, steps, init_from=None, **kwargs):
    run = RunConfig(steps=steps, batch_size=8, save_every=10, log_every=5, ema_decay=0.9)
    train = GeneratorTrainConfig(lr=5e-3 * 256 / 8, warmup_steps=5, seq_len=8, init_from=init_from)
    return train_generator(tokenizer_dir, "landscapes", out, run, train, preset="tiny", cache_images=24,
                           cache_width=64, cache_dir=out.parent / "cache", **kwargs)


def test_training_lowers_the_loss_and_resumes_exactly(tokenizer_dir, tmp_path):
    _train(tokenizer_dir, tmp_path / "a", 80)
    losses = _losses(tmp_path / "a")
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:2])
    # Interrupted at step 20 (a run asked for 20 steps), then resumed to 30 == 30 steps straight.
    _train(tokenizer_dir, tmp_path / "b", 20)
    _train(tokenizer_dir, tmp_path / "b", 30, resume=True)
    _train(tokenizer_dir, tmp_path / "c", 30)
    b = torch.load(tmp_path / "b/training_state.pt", weights_only=True)["modules"]["model"]
    c = torch.load(tmp_path / "c/training_state.pt", weights_only=True)["modules"]["model"]
    assert all(torch.equal(b[k], c[k]) for k in c)
    # The run directory is a pipeline.
    pipe = Pipeline.from_pretrained(tmp_path / "a")
    assert pipe.generate("alpine", 4, steps=2).shape == (1, 3, 16, 4 * pipe.token_width)
    # Fine-tuning from it starts where it ended, far below a fresh start.
    _train(tokenizer_dir, tmp_path / "d", 10, init_from=str(tmp_path / "a"))
    assert _losses(tmp_path / "d")[0] < 0.8 * np.mean(losses[:2])
    assert abs(_losses(tmp_path / "d")[0] - np.mean(losses[-4:])) < 0.2 * np.mean(losses[-4:])


def test_fine_tuning_needs_a_model_of_the_same_tokens(tokenizer_dir, tmp_path):
    from eqgen.cli import main

    other = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, "tiny", embed_dim=6))
    other.save_pretrained(tmp_path / "tok6")
    args = ["train", "generator", "--preset", "tiny", "--cache-images", "4", "--cache-width", "64", "--steps", "1",
            "--batch-size", "2"]
    assert main(args + ["--tokenizer", str(tmp_path / "tok6"), "--out", str(tmp_path / "six")]) == 0
    assert main(args + ["--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "four"),
                        "--init-from", str(tmp_path / "six")]) == 2


def test_bad_options(tokenizer_dir, tmp_path):
    with pytest.raises(EqgenError, match="--train-positions"):
        train = GeneratorTrainConfig(seq_len=8, train_positions=[9])
        train_generator(tokenizer_dir, "landscapes", tmp_path / "x", RunConfig(steps=1, batch_size=2), train,
                        preset="tiny", cache_images=4, cache_width=64, cache_dir=tmp_path / "cache")
    with pytest.raises(EqgenError, match="unknown --crops"):
        GeneratorTrainConfig(crops="middle")


def test_the_analysis_switches_from_the_command_line(tokenizer_dir, tmp_path):
    from eqgen.cli import main

    out = tmp_path / "full"
    assert main(["train", "generator", "--preset", "tiny", "--tokenizer", str(tokenizer_dir), "--out", str(out),
                 "--cache-images", "4", "--cache-width", "64", "--steps", "2", "--batch-size", "2",
                 "--window", "0", "--rope-shift", "1", "--crops", "edge", "--train-positions", "0,2"]) == 0
    saved, generator = (json.loads((out / name / "config.json").read_text()) for name in ("", "generator"))
    assert generator["window"] is None and generator["rope_shift"] == 1
    assert saved["training"]["train_positions"] == [0, 2] and saved["training"]["crops"] == "edge"


def _as_before_the_sub_folders(out):
    """Rewrite a run directory as eqgen wrote it before the pipeline's sub-folders and the names attn2.q and
    null_class: the configs in config.json, the weights beside it, the earlier names in every state dict."""
    def earlier(state):
        return {k.replace(".attn2.q.", ".attn2.qkv.").replace("null_class", "fake_latent"): v for k, v in state.items()}

    config = json.loads((out / "config.json").read_text())
    for name in ("tokenizer", "generator"):
        config[name] = json.loads((out / name / "config.json").read_text())
        weights = load_file(out / name / "model.safetensors")
        save_file(earlier(weights) if name == "generator" else weights, out / f"{name}.safetensors",
                  metadata=safe_open(str(out / name / "model.safetensors"), "pt").metadata())
        shutil.rmtree(out / name)
    (out / "config.json").write_text(json.dumps(config))
    state = torch.load(out / "training_state.pt", weights_only=True)
    state["modules"]["model"], state["ema"] = earlier(state["modules"]["model"]), earlier(state["ema"])
    torch.save(state, out / "training_state.pt")


def test_a_run_of_earlier_eqgen_loads_and_resumes_into_todays_layout(tokenizer_dir, tmp_path):
    _train(tokenizer_dir, tmp_path / "a", 10)
    _train(tokenizer_dir, tmp_path / "b", 20)
    _as_before_the_sub_folders(tmp_path / "a")
    before = Pipeline.from_pretrained(tmp_path / "a")   # loads as it is
    assert before.generate("alpine", 4, steps=2).shape == (1, 3, 16, 4 * before.token_width)
    _train(tokenizer_dir, tmp_path / "a", 20, resume=True)
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.suffix != ".jsonl") == [
        "config.json", "generator", "tokenizer", "training_state.pt"]
    a, b = (torch.load(tmp_path / run / "training_state.pt", weights_only=True) for run in ("a", "b"))
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in b["ema"])   # as if never interrupted
    assert Pipeline.from_pretrained(tmp_path / "a").classes == Pipeline.from_pretrained(tmp_path / "b").classes

"""Tokenizer training on the shared loop: the loss falls, evaluation writes its PNG, the second stage freezes
the encoder, the adversarial stage trains the discriminator, two DDP processes stay in step."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from eqgen.configs import from_preset
from eqgen.errors import EqgenError
from eqgen.data.sources import ImageSource
from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig
from eqgen.tokenizer_training import TOKENIZER_TRAIN_PRESETS, TokenizerTrainConfig, psnr, train_tokenizer
from eqgen.training import RunConfig


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tok"
    run = RunConfig(steps=100, batch_size=8, log_every=10, save_every=100, device="cpu", seed=0, ema_decay=0.9)
    train_tokenizer("landscapes", out, run, preset="tiny")
    return out


def test_a_tiny_tokenizers_loss_falls(trained):
    losses = [m["loss"] for m in metrics(trained) if "loss" in m]
    assert len(losses) == 10
    assert sum(losses[5:]) < 0.85 * sum(losses[:5]), losses   # noisy: each image draws its own noise strength
    # Held-out reconstructions from the posterior mean, before and after (train_tokenizer seeds the init).
    images = ImageSource("landscapes", 16, 32, seed=0).held_out(8)
    torch.manual_seed(0)
    before = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, "tiny")).eval()
    after = ColumnTokenizer.from_pretrained(trained)
    with torch.no_grad():
        l1 = [(m.decode(m.encode(images)) - images).abs().mean().item() for m in (before, after)]
    assert l1[1] < 0.6 * l1[0], l1


def test_the_run_is_a_tokenizer_directory_with_its_latent_scale(trained):
    tokenizer = ColumnTokenizer.from_pretrained(trained)
    assert tokenizer.config.latent_scale != 1.0
    final = metrics(trained)[-1]
    assert final["eval_psnr"] > 10 and "eval_wide_psnr" in final
    assert (trained / "reconstructions" / "step_0000100.png").is_file()


def test_decoder_only_stage_keeps_the_encoder(trained, tmp_path):
    train = from_preset(TokenizerTrainConfig, TOKENIZER_TRAIN_PRESETS, "tiny", decoder_only=True,
                        init_from=str(trained))
    run = RunConfig(steps=3, batch_size=4, seed=5, log_every=1, save_every=3, device="cpu")   # other renders
    tuned = train_tokenizer("landscapes", tmp_path / "stage2", run, train=train)
    before = ColumnTokenizer.from_pretrained(trained)
    for name in ("encoder", "quant_layer", "decoder"):
        same = all(torch.equal(a, b) for a, b in zip(getattr(tuned, name).state_dict().values(),
                                                      getattr(before, name).state_dict().values()))
        assert same == (name != "decoder"), name
    assert tuned.config.latent_scale == before.config.latent_scale   # tokens unchanged: so is their scale
    with pytest.raises(EqgenError, match="init_from"):
        TokenizerTrainConfig(decoder_only=True)


def test_adversarial_stage_trains_the_discriminator(tmp_path):
    train = _gan_config()
    run = RunConfig(steps=4, batch_size=4, log_every=1, save_every=4, device="cpu")
    train_tokenizer("landscapes", tmp_path / "gan", run, preset="tiny", train=train)
    logged = metrics(tmp_path / "gan")
    assert ["discriminator" in m for m in logged if "loss" in m] == [False, False, True, True]
    state = torch.load(tmp_path / "gan" / "training_state.pt", weights_only=True)
    assert "discriminator" in state["modules"] and "discriminator" in state["optimizers"]


def _gan_config():
    return from_preset(TokenizerTrainConfig, TOKENIZER_TRAIN_PRESETS, "tiny",
                       losses=dict(perceptual_weight=0.0, semantic_weight=0.0, adversarial_start=2,
                                   discriminator_channels=8, discriminator_layers=2))


def _ddp_worker(rank, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    run = RunConfig(steps=4, batch_size=2, log_every=1, save_every=4, device="cpu")
    ema = train_tokenizer("landscapes", out, run, preset="tiny", train=_gan_config())
    # Every rank must hold the same weights (gradients averaged over both ranks' own images).
    mine = torch.cat([p.detach().flatten() for p in ema.parameters()])
    both = [torch.empty_like(mine) for _ in range(2)]
    torch.distributed.all_gather(both, mine)
    torch.distributed.barrier()   # without it a rank could tear the group down while the other still gathered
    torch.distributed.destroy_process_group()
    torch.testing.assert_close(both[0], both[1], rtol=0, atol=0)


def test_ddp_tokenizer_training_with_the_adversarial_stage(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path / "ddp")), nprocs=2, join=True)
    logged = metrics(tmp_path / "ddp")
    assert ["discriminator" in m for m in logged if "loss" in m] == [False, False, True, True]
    assert ColumnTokenizer.from_pretrained(tmp_path / "ddp").config.latent_scale != 1.0


def test_psnr():
    x = torch.zeros(2, 3, 4, 4)
    assert psnr(x, x) == pytest.approx(120.0)           # capped at an MSE of 1e-12
    assert psnr(x, x + 0.2) == pytest.approx(20.0)      # 0.1 in [0, 1] units: 20 dB


def test_decoder_only_stage_from_the_command_line(tmp_path, capsys):
    import torch

    from eqgen.cli import main
    from eqgen.tokenizer import ColumnTokenizer

    common = ["train", "tokenizer", "--preset", "tiny", "--steps", "3", "--batch-size", "2"]
    assert main(common + ["--out", str(tmp_path / "first")]) == 0
    assert main(common + ["--out", str(tmp_path / "bad"), "--decoder-only"]) == 2
    assert "init_from" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "second"), "--decoder-only", "--init-from", str(tmp_path / "first"),
                          "--noise-std", "0.5"]) == 0
    first = ColumnTokenizer.from_pretrained(tmp_path / "first").state_dict()  # the stage starts from these (EMA)
    second = torch.load(tmp_path / "second/training_state.pt", weights_only=True)["modules"]["model"]
    assert all(torch.equal(first[k], second[k]) for k in first if k.startswith("encoder."))
    assert not all(torch.equal(first[k], second[k]) for k in first if k.startswith("decoder."))
    config = ColumnTokenizer.from_pretrained(tmp_path / "second").config
    assert config.height == 16 and config.noise_std == 0.5


def test_optimizer_flags_from_the_command_line(tmp_path):
    from eqgen.cli import main

    args = ["train", "tokenizer", "--preset", "tiny", "--steps", "4", "--batch-size", "2", "--warmup", "1",
            "--decay-every", "2", "--betas", "0.8", "0.95", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    state = torch.load(tmp_path / "run/training_state.pt", weights_only=True)
    assert state["optimizers"]["model"]["param_groups"][0]["betas"] == (0.8, 0.95)
    last = [m for m in metrics(tmp_path / "run") if "lr_model" in m][-1]
    assert last["lr_model"] == pytest.approx(2e-3 * 0.2)   # the preset's rate, ×0.2 two steps after the warm-up
    assert main(args[:-2] + ["--betas", "0.5", "1.0", "--out", str(tmp_path / "bad")]) == 2


def test_fine_tuning_may_start_from_the_tokenizer_of_a_model_directory(tmp_path):
    """--init-from takes a model directory too (here the shipped one, which has no sub-folders)."""
    from eqgen import Pipeline

    train = from_preset(TokenizerTrainConfig, TOKENIZER_TRAIN_PRESETS, "tiny", decoder_only=True, init_from="builtin")
    run = RunConfig(steps=1, batch_size=2, log_every=1, save_every=1, device="cpu")
    tuned = train_tokenizer("landscapes", tmp_path / "t", run, train=train)
    shipped = Pipeline.from_pretrained().tokenizer
    assert tuned.config == shipped.config
    assert all(torch.equal(a, b) for a, b in zip(tuned.encoder.state_dict().values(),
                                                  shipped.encoder.state_dict().values()))

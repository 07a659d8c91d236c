"""Parity with the official tokenizer: every recorded output of ../shared/fixtures/official, via the converter,
in float64 against the float32 reference (the bound is explained in parity.py)."""
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from eqgen.configs import from_preset
from eqgen.convert.tokenizer import config_from_official, load_official_tokenizer, official_name, read_official_config
from eqgen.errors import EqgenError
from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig, conv_tokens
from parity import assert_parity, double, normalised_ulps

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/official"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="official fixtures (../shared/fixtures/official) absent")
WEIGHTS, CONFIG = FIXTURES / "tokenizer_tiny_state_dict_ema_only.safetensors", FIXTURES / "tokenizer_tiny_config.json"


@pytest.fixture(scope="module")
def model():
    return load_official_tokenizer(WEIGHTS, CONFIG).double()


@pytest.fixture(scope="module")
def model32():
    """For the checks that replay the official random draws, which float64 would draw differently."""
    return load_official_tokenizer(WEIGHTS, CONFIG)


@pytest.fixture(scope="module")
def io():
    return double(load_file(FIXTURES / "tokenizer_tiny_io.safetensors"))


close = assert_parity


@torch.no_grad()
@pytest.mark.parametrize("name", ["sq", "wide"])
def test_encode_decode(model, io, name):
    x, mean = io[f"{name}.x"], io[f"{name}.posterior_mean"]
    close(model.encoder(x), io[f"{name}.encoder_out"])
    close(model.encode(x), mean)
    columns = conv_tokens(model.post_quant_layer, mean)
    close(columns, io[f"{name}.post_quant_out"])
    close(model.decoder(columns)[1], io[f"{name}.semantic_map"])
    image, semantic = model.decode(mean, return_semantic=True)
    close(image, io[f"{name}.decode_image"])
    close(semantic, io[f"{name}.decode_semantic"])
    close(model.encode(x) * model.config.latent_scale, io[f"{name}.generator_latent_mean"])


@torch.no_grad()
@pytest.mark.parametrize("name", ["sq", "wide"])
def test_noise_posterior_sample(model32, io, name):
    mean = io[f"{name}.posterior_mean"].float()
    torch.manual_seed(4321)
    close(model32.sample(mean), io[f"{name}.sample_seed4321"])
    torch.manual_seed(4321)  # the two draws, replayed: the per-image strength, then ε
    close((torch.randn(len(mean)) * 2.5 / 0.8).clamp(-2.5, 2.5), io[f"{name}.sample_seed4321_per_image_std"])
    close(torch.randn(mean.shape), io[f"{name}.sample_seed4321_eps"])


@torch.no_grad()
def test_random_tokens_and_groupnorm_probe(model, io):
    image, semantic = model.decode(io["rand5.z"], return_semantic=True)
    close(image, io["rand5.decode_image"])
    close(semantic, io["rand5.decode_semantic"])
    norm, x, expected = model.encoder.down[2].block[0].norm1, io["gn_probe.x"], io["gn_probe.encoder_down2_block0_norm1"]
    ulps = normalised_ulps(x, norm.num_groups)
    assert_parity(norm(x), expected, ulps)
    with pytest.raises(AssertionError):  # the probe is there to catch an eps of 1e-5 for 1e-6
        assert_parity(F.group_norm(x, norm.num_groups, norm.weight, norm.bias, eps=1e-5), expected, ulps)


def test_official_tiny_preset_is_the_fixture(model32):
    assert model32.config == from_preset(TokenizerConfig, TOKENIZER_PRESETS, "official_tiny", latent_scale=0.05493)


@torch.no_grad()
def test_reads_the_ema_copy_not_the_raw_weights(model32, io, tmp_path):
    """Decoy raw tensors (every raw key of the official model, random values) and loss.* entries change nothing."""
    state = load_file(WEIGHTS)
    g = torch.Generator().manual_seed(0)
    for entry in json.loads(CONFIG.read_text())["state_dict_keys_including_raw"]:
        if not entry["key"].startswith("ema_"):
            state[entry["key"]] = torch.randn(entry["shape"], generator=g)
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4, generator=g)
    save_file(state, tmp_path / "decoys.safetensors")
    again = load_official_tokenizer(tmp_path / "decoys.safetensors", CONFIG)
    mean = io["sq.posterior_mean"].float()
    torch.testing.assert_close(again.decode(mean), model32.decode(mean), rtol=0, atol=0)


def test_raw_weights_alone_are_used_when_there_is_no_ema_copy(model32, io, tmp_path):
    state = {official_name(k, ema=False): v for k, v in model32.state_dict().items()}
    save_file(state, tmp_path / "raw.safetensors")
    again = load_official_tokenizer(tmp_path / "raw.safetensors", CONFIG).double()
    with torch.no_grad():
        close(again.decode(io["sq.posterior_mean"]), io["sq.decode_image"])


def test_lightning_checkpoint_and_pickle_opt_in(tmp_path, io):
    state = load_file(WEIGHTS)
    torch.save({"state_dict": state, "global_step": 1000}, tmp_path / "plain.ckpt")
    with torch.no_grad():
        again = load_official_tokenizer(tmp_path / "plain.ckpt", CONFIG).double()
        close(again.decode(io["sq.posterior_mean"]), io["sq.decode_image"])
    # A checkpoint that pickles an arbitrary object is refused unless the user opts in.
    torch.save({"state_dict": state, "hparams": Unlisted()}, tmp_path / "pickled.ckpt")
    with pytest.raises(EqgenError, match="trust_pickle=True"):
        load_official_tokenizer(tmp_path / "pickled.ckpt", CONFIG)
    load_official_tokenizer(tmp_path / "pickled.ckpt", CONFIG, trust_pickle=True)


class Unlisted:
    pass


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("ema_decoder.conv_outweight"), r"missing: decoder\.conv_out\.weight"),
    (lambda s: s.update({"ema_decoder.conv_outweight": torch.zeros(3, 64, 1, 1)}), r"wrong shape: decoder\.conv_out\.weight"),
    (lambda s: s.update({"ema_decoder.extraweight": torch.zeros(1)}), r"unexpected: ema_decoder\.extraweight"),
])
def test_a_file_that_does_not_fit_is_refused_by_name(tmp_path, edit, message):
    state = load_file(WEIGHTS)
    edit(state)
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(EqgenError, match=message):
        load_official_tokenizer(tmp_path / "bad.safetensors", CONFIG)


def test_not_a_tokenizer_checkpoint(tmp_path):
    save_file({"class_emb.weight": torch.zeros(2, 2)}, tmp_path / "gen.safetensors")
    with pytest.raises(EqgenError, match="no official tokenizer weights"):
        load_official_tokenizer(tmp_path / "gen.safetensors", CONFIG)
    with pytest.raises(EqgenError, match="not found"):
        load_official_tokenizer(tmp_path / "missing.ckpt", CONFIG)


RELEASED_YAML = """
model:
  base_learning_rate: 1.92e-4
  target: tokenizer.models.tokenizer.EquivariantTokenizer
  params:
    embed_dim: 256
    use_ema: true
    post_channels: 4096
    std: 2.5
    ddconfig: {double_enc: false, z_channels: 256, resolution: 256, in_channels: 3, out_ch: 3, ch: 128,
               ch_mult: [1, 1, 2, 4, 4], num_res_blocks: 2, dropout: 0.0, attn_resolutions: [16],
               len_down_scale: 4, semantic_map: res}
    sematicconfig: {z_channels: 256, resolution: 256, in_channels: 3, out_ch: 768, ch: 64, ch_mult: [8, 12],
                    num_res_blocks: 2, dropout: 0.0, attn_resolutions: [], downsample_scale: 0}
"""


def test_the_released_config_is_the_paper_preset(tmp_path):
    (tmp_path / "tokenizer_config.yaml").write_text(RELEASED_YAML)
    config = config_from_official(read_official_config(tmp_path / "tokenizer_config.yaml"))
    assert config == from_preset(TokenizerConfig, TOKENIZER_PRESETS, "paper")


@pytest.mark.parametrize("ema", [True, False])
def test_the_paper_preset_has_every_released_tensor(ema):
    """Every tensor of the released tokenizer (keys_tokenizer_second_stage.json), mapped by name and shape,
    except the semantic decoder's extra block per level that the official code builds and never runs."""
    unused = re.compile(r"semantic_decoder\.down\.?\d\.?block\.?2")  # 2 = num_res_blocks
    released = {e["key"]: e["shape"] for e in json.loads((FIXTURES / "keys_tokenizer_second_stage.json").read_text())["keys"]
                if e["key"].startswith("ema_") == ema and not e["key"].endswith((".decay", ".num_updates"))
                and not unused.search(e["key"])}
    with torch.device("meta"):
        model = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, "paper"))
    ours = {official_name(k, ema): list(v.shape) for k, v in model.state_dict().items()}
    assert ours == released


def test_official_configs_eqgen_does_not_build_are_refused():
    params = read_official_config(CONFIG)
    with pytest.raises(EqgenError, match="double_enc"):
        config_from_official({**params, "ddconfig": {**params["ddconfig"], "double_enc": True}})
    with pytest.raises(EqgenError, match="post_channels 63"):
        config_from_official({**params, "post_channels": 63})
    with pytest.raises(EqgenError, match="lacks 'sematicconfig'"):
        config_from_official({k: v for k, v in params.items() if k != "sematicconfig"})

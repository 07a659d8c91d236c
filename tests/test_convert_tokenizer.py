"""Parity with the official tokenizer: every recorded output of ../shared/fixtures/official, via the converter."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from eqgen.convert.tokenizer import convert_tokenizer
from eqgen.errors import EqgenError
from eqgen.tokenizer import conv1d_tokens

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/official"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="official fixtures (../shared/fixtures/official) absent")
WEIGHTS, CONFIG = FIXTURES / "tokenizer_tiny_state_dict_ema_only.safetensors", FIXTURES / "tokenizer_tiny_config.json"


@pytest.fixture(scope="module")
def model():
    return convert_tokenizer(WEIGHTS, CONFIG)


@pytest.fixture(scope="module")
def io():
    return load_file(FIXTURES / "tokenizer_tiny_io.safetensors")


def close(a, b):
    torch.testing.assert_close(a, b, atol=3e-6, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("name", ["sq", "wide"])
def test_encode_decode(model, io, name):
    x = io[f"{name}.x"]
    close(model.encoder(x), io[f"{name}.encoder_out"])
    mean = model.encode(x)
    close(mean, io[f"{name}.posterior_mean"])
    close(conv1d_tokens(model.post_quant_layer, mean), io[f"{name}.post_quant_out"])
    image, features = model.decode(io[f"{name}.posterior_mean"], return_features=True)
    close(features, io[f"{name}.semantic_map"])
    close(image, io[f"{name}.decode_image"])
    close(model.semantic_decoder(features), io[f"{name}.decode_semantic"])
    close(mean * model.config.latent_scale, io[f"{name}.generator_latent_mean"])


@torch.no_grad()
@pytest.mark.parametrize("name", ["sq", "wide"])
def test_noise_posterior_sample(model, io, name):
    torch.manual_seed(4321)
    close(model.sample(io[f"{name}.posterior_mean"]), io[f"{name}.sample_seed4321"])
    # The same draws from an explicit generator.
    sample = model.sample(io[f"{name}.posterior_mean"], torch.Generator().manual_seed(4321))
    close(sample, io[f"{name}.sample_seed4321"])


@torch.no_grad()
def test_any_width_and_group_norm(model, io):
    image, features = model.decode(io["rand5.z"], return_features=True)
    close(image, io["rand5.decode_image"])
    close(model.semantic_decoder(features), io["rand5.decode_semantic"])
    close(model.encoder.down[2].block[0].norm1(io["gn_probe.x"]), io["gn_probe.encoder_down2_block0_norm1"])


def test_reads_the_ema_weights_not_the_raw_ones(tmp_path):
    """A checkpoint holding raw weights beside the EMA ones gives the EMA model's outputs."""
    state = load_file(WEIGHTS)
    raw = {k.replace("ema_", "", 1).replace("up3block", "up.3.block"): torch.randn(3) for k in list(state)[:20]}
    save_file({**state, **raw, "loss.logvar": torch.zeros(())}, tmp_path / "with_raw.safetensors")
    a = convert_tokenizer(tmp_path / "with_raw.safetensors", CONFIG)
    b = convert_tokenizer(WEIGHTS, CONFIG)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_refuses_a_file_that_does_not_fit(tmp_path):
    state = load_file(WEIGHTS)
    state.pop("ema_decoder.conv_outweight")
    state["ema_encoder.conv_inweight"] = torch.zeros(1, 1)
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(EqgenError, match=r"missing: decoder.conv_out.weight.*wrong shape: encoder.conv_in.weight"):
        convert_tokenizer(tmp_path / "bad.safetensors", CONFIG)
    with pytest.raises(EqgenError, match="no official tokenizer EMA weights"):
        save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
        convert_tokenizer(tmp_path / "other.safetensors", CONFIG)


OFFICIAL_YAML = """
model:
  target: tokenizer.models.tokenizer.EquivariantTokenizer
  params:
    embed_dim: 256
    post_channels: 4096
    std: 2.5
    ddconfig: {double_enc: false, z_channels: 256, resolution: 256, in_channels: 3, out_ch: 3, ch: 128,
               ch_mult: [1, 1, 2, 4, 4], num_res_blocks: 2, dropout: 0.0, attn_resolutions: [16],
               len_down_scale: 4, semantic_map: res}
    sematicconfig: {z_channels: 256, resolution: 256, in_channels: 3, out_ch: 768, ch: 64, ch_mult: [8, 12],
                    num_res_blocks: 2, dropout: 0.0, attn_resolutions: [], downsample_scale: 0}
"""


def test_released_config_has_the_official_keys_and_shapes(tmp_path):
    """The paper preset, built from the official YAML, matches every EMA entry of the released tokenizer."""
    import json

    from eqgen.configs import from_preset
    from eqgen.convert.tokenizer import config_from_official, ema_name, read_official_config
    from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig

    (tmp_path / "tokenizer_config.yaml").write_text(OFFICIAL_YAML)
    config = config_from_official(read_official_config(tmp_path / "tokenizer_config.yaml"))
    assert config == from_preset(TokenizerConfig, TOKENIZER_PRESETS, "paper")
    with torch.device("meta"):
        model = ColumnTokenizer(config)
    official = {k["key"]: k["shape"] for k in json.loads((FIXTURES / "keys_tokenizer_second_stage.json").read_text())["keys"]}
    for key, value in model.state_dict().items():
        assert official[ema_name(key)] == list(value.shape), key
    # The only official EMA weights eqgen does not build: the semantic decoder's never-run last blocks.
    ours = {ema_name(k) for k in model.state_dict()}
    left = {k for k in official if k.startswith("ema_") and k not in ours and not k.endswith(("decay", "num_updates"))}
    assert left and all(k.startswith(("ema_semantic_decoder.down0block2", "ema_semantic_decoder.down1block2")) for k in left)

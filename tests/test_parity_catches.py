"""The parity bound (parity.py) still fails on a real slip: each mistake below, made on purpose in a copy of the
official tiny models run in float64, is caught by the same checks test_convert_*.py make. The comments give how
far each slip moves the output, in the bound's units (16 allowed; the correct models use ≤ 3.1 for the
generator, ≤ 14.4 for the tokenizer)."""
import copy
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import eqgen.flow
import eqgen.generator
from eqgen.convert.generator import load_official_generator
from eqgen.convert.tokenizer import load_official_tokenizer
from parity import assert_parity, double, normalised_ulps

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/official"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="official fixtures (../shared/fixtures/official) absent")


@pytest.fixture(scope="module")
def generator():
    return load_official_generator(FIXTURES / "generator_tiny_state_dict.safetensors", heads=4, window=3,
                                   noise_draws=1, train_tokens=8).double()


@pytest.fixture(scope="module")
def tokenizer():
    return load_official_tokenizer(FIXTURES / "tokenizer_tiny_state_dict_ema_only.safetensors",
                                   FIXTURES / "tokenizer_tiny_config.json").double()


@pytest.fixture(scope="module")
def gio():
    return double(load_file(FIXTURES / "generator_tiny_io.safetensors"))


@pytest.fixture(scope="module")
def tio():
    return double(load_file(FIXTURES / "tokenizer_tiny_io.safetensors"))


def transformer_output(model, io):
    with torch.no_grad():
        return model.condition(io["enc.tokens_L8"], io["enc.labels"])


def with_eps(model, patterns, eps):
    model = copy.deepcopy(model)
    for name, module in model.named_modules():
        if any(fnmatch(name, p) for p in patterns):
            module.eps = eps
    return model


def test_the_correct_models_pass(generator, tokenizer, gio, tio):
    assert_parity(transformer_output(generator, gio), gio["enc.out_L8"])
    with torch.no_grad():
        assert_parity(tokenizer.decode(tio["sq.posterior_mean"]), tio["sq.decode_image"])


@pytest.mark.parametrize("names, eps", [
    (["z_proj_ln"], 1e-5),                                             # ~1,900 units
    (["blocks.*.norm1"], 1e-5),                                        # ~19
    (["blocks.*.cross_norm", "blocks.*.cross_cond_norm"], 1e-6),       # ~30
])
def test_a_layernorm_eps_slip_is_caught(generator, gio, names, eps):
    with pytest.raises(AssertionError):
        assert_parity(transformer_output(with_eps(generator, names, eps), gio), gio["enc.out_L8"])


def test_the_probes_catch_the_eps_slip_the_output_hides(generator, gio):
    """The final norm's eps moves the output by ~10 units only; its probe amplifies the slip to O(0.3)."""
    slipped, x = with_eps(generator, ["norm"], 1e-5), gio["ln_probe.x"]
    with torch.no_grad():
        assert_parity(generator.norm(x), gio["ln_probe.encoder_norm"], normalised_ulps(x))
        with pytest.raises(AssertionError):
            assert_parity(slipped.norm(x), gio["ln_probe.encoder_norm"], normalised_ulps(x))


def test_tanh_gelu_is_caught(generator, gio, monkeypatch):
    exact = F.gelu
    monkeypatch.setattr(F, "gelu", lambda x: exact(x, approximate="tanh"))  # ~1,000 units
    with pytest.raises(AssertionError):
        assert_parity(transformer_output(generator, gio), gio["enc.out_L8"])


def test_rope_positions_starting_at_1_are_caught(generator, gio, monkeypatch):
    angles = eqgen.generator.rope_angles
    monkeypatch.setattr(eqgen.generator, "rope_angles", lambda p, *args: angles(p + 1, *args))  # ~7e5 units
    with pytest.raises(AssertionError):
        assert_parity(transformer_output(generator, gio), gio["enc.out_L8"])


def test_time_times_1000_is_caught(generator, gio, monkeypatch):
    embedding = eqgen.flow.timestep_embedding
    monkeypatch.setattr(eqgen.flow, "timestep_embedding", lambda t, *args: embedding(1000 * t, *args))  # ~4e5
    with torch.no_grad(), pytest.raises(AssertionError):
        assert_parity(generator.head(gio["mlp.x"], gio["mlp.t"], gio["mlp.c"]), gio["mlp.out"])


def test_tokenizer_slips_are_caught(tokenizer, tio):
    groupnorm_eps = copy.deepcopy(tokenizer)  # ~10,000 units
    zero_padding = copy.deepcopy(tokenizer)   # ~7e6 units
    for module in groupnorm_eps.modules():
        if isinstance(module, torch.nn.GroupNorm):
            module.eps = 1e-5
    for module in zero_padding.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)) and module.padding_mode == "reflect":
            module.padding_mode = "zeros"
    for slipped in (groupnorm_eps, zero_padding):
        with torch.no_grad(), pytest.raises(AssertionError):
            assert_parity(slipped.decode(tio["sq.posterior_mean"]), tio["sq.decode_image"])

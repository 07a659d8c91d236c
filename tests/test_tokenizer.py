"""ColumnTokenizer: columns, resamplers, shapes at any width, long decodes, posteriors, errors, save/load."""
import pytest
import torch
import torch.nn.functional as F

from eqgen.configs import from_preset
from eqgen.errors import EqgenError
from eqgen.tokenizer import (TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig, columnize, pixel_shuffle,
                             pixel_unshuffle, rasterize)


def config(name="tiny", **overrides) -> TokenizerConfig:
    return from_preset(TokenizerConfig, TOKENIZER_PRESETS, name, **overrides)


def tiny(seed=0, **overrides) -> ColumnTokenizer:
    torch.manual_seed(seed)
    return ColumnTokenizer(config("tiny", **overrides)).eval()


def test_columnize_and_rasterize_are_inverse():
    latent = torch.randn(2, 5, 4, 9)
    tokens = columnize(latent)
    assert tokens.shape == (2, 9, 20)
    assert torch.equal(tokens[1, 3, 2 * 4 + 1], latent[1, 2, 1, 3])  # feature index c·H + h
    assert torch.equal(rasterize(tokens, 4), latent)


def test_pixel_shuffles():
    x = torch.randn(2, 8, 6, 10)
    assert torch.equal(pixel_unshuffle(x, 2, 2), F.pixel_unshuffle(x, 2))
    assert torch.equal(pixel_shuffle(x, 2, 2), F.pixel_shuffle(x, 2))
    for fh, fw in ((2, 2), (2, 1)):
        assert torch.equal(pixel_shuffle(pixel_unshuffle(x, fh, fw), fh, fw), x)
    # (2, 1): channel c·2 + dy holds row 2h + dy
    assert torch.equal(pixel_unshuffle(x, 2, 1)[:, 2 * 3 + 1], x[:, 3, 1::2])


@torch.no_grad()
@pytest.mark.parametrize("width", [8, 16, 40])
def test_shapes_at_any_width(width):
    model = tiny()
    f = model.token_width
    images = torch.rand(2, 3, 16, width) * 2 - 1
    tokens = model.encode(images)
    assert tokens.shape == (2, width // f, 4)
    assert model.decode(tokens).shape == (2, 3, 16, width)
    image, semantic = model.decode(tokens, return_semantic=True)
    assert semantic.shape == (2, 8, 16 // 4, width // f)  # on the latent grid


@torch.no_grad()
def test_height_only_downsampling():
    """len_down_scale below the number of downsamples: the later ones halve the height only."""
    model = tiny(ch_mult=(1, 2, 2, 2), len_down_scale=1)
    assert model.token_width == 2 and model.config.latent_height == 2
    tokens = model.encode(torch.rand(1, 3, 16, 12))
    assert tokens.shape == (1, 6, 4)
    assert model.decode(tokens).shape == (1, 3, 16, 12)


def test_bad_inputs_are_clear_errors():
    model = tiny()
    with pytest.raises(EqgenError, match="height 32"):
        model.encode(torch.zeros(1, 3, 32, 16))
    with pytest.raises(EqgenError, match="multiple of 4"):
        model.encode(torch.zeros(1, 3, 16, 18))
    with pytest.raises(EqgenError, match="at least 8"):
        model.encode(torch.zeros(1, 3, 16, 4))
    with pytest.raises(EqgenError, match=r"\[B, 3, H, W\]"):
        model.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(EqgenError, match=r"tokens must be \[B, N, 4\]"):
        model.decode(torch.zeros(1, 4, 7))
    with pytest.raises(EqgenError, match="at least 2 tokens"):
        model.decode(torch.zeros(1, 1, 4))


@pytest.mark.parametrize("overrides, message", [
    (dict(norm_groups=3), "norm_groups 3"),
    (dict(len_down_scale=3), "len_down_scale 3"),
    (dict(height=18), "height 18"),
    (dict(height=4), "at least 2 latent rows"),
    (dict(posterior="vq"), "unknown posterior"),
])
def test_bad_configs_are_clear_errors(overrides, message):
    with pytest.raises(EqgenError, match=message):
        config("tiny", **overrides)


@torch.no_grad()
def test_a_window_decodes_like_the_middle_of_a_long_decode_outside_a_boundary_band():
    """Decode a window of n tokens alone, and inside a long sequence (the window repeated 3 times, so that
    the content is alike on both sides). The decoder is convolutional, so they agree except within a band at
    the window's edges, where reflect padding replaces the real neighbours. Beyond the band a floor remains:
    GroupNorm statistics and the attention span the whole width, so it shrinks as the window grows.
    Measured (tiny preset, random weights, image mean |x| ≈ 0.26): mean |error| per token ≈ 0.3 at the edge
    tokens, down to the floor within 8 tokens (32 px); floor (the largest per-token mean outside the band)
    0.028 at n = 32, 0.0048 at n = 128; max |error| 2.3 inside the band vs 0.24 outside it at n = 32."""
    model = tiny()
    f, band = model.token_width, 8
    floors = []
    for n in (32, 128):
        window = torch.randn(4, n, 4, generator=torch.Generator().manual_seed(n))
        long = model.decode(window.repeat(1, 3, 1))
        assert long.shape == (4, 3, 16, 3 * n * f)  # k times the tokens, k times the width
        error = (model.decode(window) - long[..., n * f:2 * n * f]).abs().mean(dim=(0, 1, 2)).view(n, f).mean(1)
        edge, outside = torch.minimum(error[0], error[-1]), error[band:-band].max()
        assert outside < edge / 10
        floors.append(outside)
    assert floors[1] < 0.5 * floors[0]


def test_noise_posterior_draws_replay_the_official_order():
    """s = clamp(randn(B)·std/0.8, ±std) first, then ε = randn(mean.shape): mean + s·ε."""
    model = tiny()
    mean = torch.randn(3, 5, 4)
    sample = model.sample(mean, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    s = (torch.randn(3, generator=g) * 2.5 / 0.8).clamp(-2.5, 2.5)
    eps = torch.randn(3, 5, 4, generator=g)
    torch.testing.assert_close(sample, mean + s.view(3, 1, 1) * eps, rtol=0, atol=0)


def test_noise_posterior_statistics():
    model = tiny()
    samples = model.sample(torch.zeros(2000, 64, 4), torch.Generator().manual_seed(0))
    per_image = samples.flatten(1).std(dim=1)
    # One noise strength per image, |N(0,1)·std/0.8| clamped at std: from ~0 up to std, P(|z| > 0.8) ≈ 42%.
    assert per_image.min() < 0.05 and per_image.max() < 2.5 * 1.2  # 256 values: SE of a std ≈ 4.4%
    assert 0.35 < (per_image > 2.5 * 0.9).float().mean() < 0.5


def test_kl_posterior():
    model = tiny(posterior="kl")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    moments = model.encode_moments(images)
    assert moments.shape == (2, 4, 8)
    torch.testing.assert_close(model.encode(images), moments[..., :4])
    zero = torch.zeros(1, 3, 8)  # mean 0, log-variance 0: N(0, I) itself
    assert model.regularization(zero).item() == 0.0
    assert model.regularization(zero + 1).item() > 0
    draws = model.sample(torch.cat([torch.zeros(1, 2000, 4), torch.full((1, 2000, 4), 2 * torch.tensor(0.5).log())], -1),
                         torch.Generator().manual_seed(0))
    assert abs(draws.std().item() - 0.5) < 0.02
    assert torch.equal(model.sample(moments[..., :4]), moments[..., :4])  # means alone (a token cache)


def test_noise_regularization_is_half_the_squared_mean():
    model = tiny()
    mean = torch.randn(2, 3, 4)
    torch.testing.assert_close(model.regularization(mean), 0.5 * (mean**2).sum(dim=(1, 2)))


def test_save_and_load(tmp_path):
    model = tiny(latent_scale=0.25)
    model.save_pretrained(tmp_path / "tok")
    again = ColumnTokenizer.from_pretrained(tmp_path / "tok")
    assert again.config == model.config
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again.encode(x), model.encode(x))
    tiny(z_channels=8).save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text((tmp_path / "tok" / "config.json").read_text())
    with pytest.raises(EqgenError, match="does not hold weights for its config.json"):
        ColumnTokenizer.from_pretrained(tmp_path / "other")


@pytest.mark.parametrize("name", sorted(TOKENIZER_PRESETS))
def test_presets_build(name):
    with torch.device("meta"):  # the paper's tokenizer has 280M parameters: shapes only
        model = ColumnTokenizer(config(name))
    cfg = model.config
    assert cfg.height % cfg.token_width == 0
    assert model.quant_layer.out_channels == cfg.embed_dim

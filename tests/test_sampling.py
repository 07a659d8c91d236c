"""The windowed KV cache: the same tokens as recomputing the prefix, constant size, prefixes, roll-back, seeds."""
import pytest
import torch

from eqgen.configs import from_preset
from eqgen.errors import EqgenError
from eqgen.generator import GENERATOR_PRESETS, NULL_LABEL, EquivariantGenerator, GeneratorConfig
from eqgen.sampling import TokenSampler, generate_tokens


def perturbed(**overrides):
    """A tiny generator with non-trivial weights (a fresh flow head outputs exactly zero)."""
    torch.manual_seed(0)
    model = EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, "tiny", **overrides))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p += 0.1 * torch.randn(p.shape, generator=g)
    return model.eval()


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("window", [3, None])
@pytest.mark.parametrize("cfg,solver", [(1.0, "euler"), (3.0, "heun")])
def test_cached_equals_recompute(window, cfg, solver):
    model = perturbed(depth=3, window=window)
    n = 14  # longer than window × depth = 9
    runs = [generate_tokens(model, torch.tensor([0, 3]), n, cfg=cfg, steps=3, solver=solver, rng=5, mode=mode)
            for mode in ("cached", "recompute")]
    close(*runs)
    assert runs[0].shape == (2, n, 8) and runs[0].std() > 0.1


def test_cache_size_is_constant_in_position():
    model = perturbed(depth=2, window=3)
    sampler = TokenSampler(model, torch.tensor([1]), 40, steps=1)
    sizes = []
    for _ in range(40):
        sampler.step()
        sampler.condition()  # feed the new token into the cache
        sizes.append(sampler.cache_nbytes())
        assert all(cache.k.shape[2] == min(sampler.length, 3) for cache in sampler.caches)
    assert len(set(sizes[3:])) == 1
    full = TokenSampler(perturbed(depth=2, window=None), torch.tensor([1]), 10, steps=1)
    for _ in range(10):
        full.step()
    full.condition()
    assert all(cache.k.shape[2] == 10 for cache in full.caches)  # full causal attention keeps everything


def test_seed_generator_and_global_rng_give_the_same_tokens():
    model = perturbed()
    args = (model, torch.tensor([2]), 5)
    a = generate_tokens(*args, steps=2, rng=7)
    b = generate_tokens(*args, steps=2, rng=torch.Generator().manual_seed(7))
    torch.manual_seed(7)
    c = generate_tokens(*args, steps=2)  # the global RNG, as the official sampler after torch.manual_seed(7)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, generate_tokens(*args, steps=2, rng=8))
    # a seed in the options, and generator=, the earlier name of rng, give the same draws
    assert torch.equal(a, generate_tokens(*args, steps=2, seed=7))
    assert torch.equal(a, generate_tokens(*args, steps=2, generator=7))
    with pytest.raises(EqgenError, match="not both"):
        generate_tokens(*args, rng=7, generator=7)
    g = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    assert torch.equal(torch.randn(3, 8, generator=g), torch.randn(3, 8))


def test_prefix_is_kept_and_a_long_one_is_continued_exactly():
    model = perturbed(depth=2, window=2)
    labels = torch.tensor([1, 2])
    prefix = generate_tokens(model, labels, 12, steps=2, rng=0)
    # The cached sampler prefills only the last window·depth + 1 prefix tokens; recompute reads them all.
    cont = [generate_tokens(model, labels, 16, prefix=prefix, cfg=2.0, steps=2, rng=9, mode=mode)
            for mode in ("cached", "recompute")]
    assert torch.equal(cont[0][:, :12], prefix)
    close(*cont)
    with pytest.raises(EqgenError, match="more than num_tokens"):
        generate_tokens(model, labels, 8, prefix=prefix)


def test_rollback_regenerates_from_column_k():
    model = perturbed(depth=2, window=2)
    sampler = TokenSampler(model, torch.tensor([2]), 12, cfg=2.0, steps=2, rng=0)
    for _ in range(12):
        sampler.step()
    first = sampler.tokens.clone()
    sampler.rollback(7)
    assert torch.equal(sampler.tokens, first[:, :7])
    sampler.rng.manual_seed(123)
    for _ in range(5):
        sampler.step()
    assert not torch.allclose(sampler.tokens[:, 7], first[:, 7])
    # What follows a roll-back is what a fresh sampler continuing that prefix produces.
    fresh = generate_tokens(model, torch.tensor([2]), 12, prefix=first[:, :7], cfg=2.0, steps=2, rng=123)
    close(sampler.tokens, fresh)
    with pytest.raises(EqgenError, match="roll back"):
        sampler.rollback(13)


def test_temperature_scales_the_start_noise():
    model = perturbed()
    labels = torch.zeros(64, dtype=torch.long)
    cold, warm = (generate_tokens(model, labels, 1, steps=3, temperature=temp, rng=0) for temp in (0.3, 1.0))
    assert cold.std(dim=0).mean() < 0.6 * warm.std(dim=0).mean()
    # At temperature 0 the start noise vanishes: the seed no longer matters.
    assert torch.equal(*(generate_tokens(model, labels[:2], 3, steps=2, temperature=0.0, rng=s) for s in (1, 2)))


def test_unconditional_sampling_uses_the_null_class():
    model = perturbed()
    uncond = generate_tokens(model, torch.tensor([NULL_LABEL]), 3, steps=2, rng=0)
    cond = generate_tokens(model, torch.tensor([1]), 3, steps=2, rng=0)
    assert not torch.allclose(uncond, cond)


def test_bad_requests_are_clear_errors():
    model = perturbed()
    labels = torch.tensor([0])
    for kwargs, message in [(dict(mode="fast"), "sampling mode"), (dict(solver="rk4"), "unknown solver"),
                            (dict(cfg=2.0, cfg_schedule="cosine"), "cfg schedule"), (dict(steps=0), "steps"),
                            (dict(temperature=-1.0), "temperature must be at least 0"),
                            (dict(cfg=float("nan")), "cfg must be a finite number"), (dict(seed=-1), "seed must be"),
                            (dict(stepz=3), "unknown sampling option")]:
        with pytest.raises(EqgenError, match=message):
            generate_tokens(model, labels, 2, **kwargs)
    with pytest.raises(EqgenError, match="prefix must be"):
        generate_tokens(model, labels, 4, prefix=torch.randn(2, 2, 8))
    with pytest.raises(EqgenError, match="eval"):
        generate_tokens(model.train(), labels, 2)


def test_sampling_options_are_the_one_home_of_the_defaults(tmp_path):
    """The command line's and the app's defaults are SamplingOptions' (constant guidance for panoramas and the app),
    and the low-level sampler's are the official sampler's."""
    from eqgen.cli import build_parser
    from eqgen.cli.common import sampling_options
    from eqgen.sampling import OFFICIAL, PANORAMA, SamplingOptions

    parser, png = build_parser(), str(tmp_path / "x.png")
    assert sampling_options(parser.parse_args(["sample", "-o", png])) == SamplingOptions()
    assert sampling_options(parser.parse_args(["panorama", "--class", "a", "-o", png])) == PANORAMA
    assert sampling_options(parser.parse_args(["app"])) == PANORAMA
    assert sampling_options(parser.parse_args(["eval", "samples"])) == SamplingOptions()
    assert sampling_options(parser.parse_args(["eval", "long", "--class", "a"])) == PANORAMA
    assert PANORAMA == SamplingOptions(cfg_schedule="constant")
    assert sampling_options(parser.parse_args(["sample", "-o", png, "--cfg", "2", "--steps", "4"])) == \
        SamplingOptions(cfg=2.0, steps=4)
    assert TokenSampler(perturbed(), torch.tensor([0]), 2).options == OFFICIAL

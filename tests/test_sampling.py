"""The windowed KV cache: same tokens as recomputing everything, bounded cache, roll-back and prefixes."""
import pytest
import torch

from eqgen.configs import from_preset
from eqgen.errors import EqgenError
from eqgen.generator import GENERATOR_PRESETS, EquivariantGenerator, GeneratorConfig
from eqgen.sampling import SamplingOptions, TokenSampler, generate_tokens


def perturbed(**overrides):
    """A tiny generator with non-trivial weights (the zero-initialised head would output nothing)."""
    torch.manual_seed(0)
    model = EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, "tiny", **overrides))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p += 0.1 * torch.randn(p.shape, generator=g)
    return model.eval()


@pytest.mark.parametrize("window", [2, None])
@pytest.mark.parametrize("cfg,solver", [(1.0, "euler"), (3.0, "heun")])
def test_cached_equals_recompute(window, cfg, solver):
    model = perturbed(depth=3, window=window)
    options = SamplingOptions(cfg=cfg, steps=4, solver=solver)
    labels = torch.tensor([0, 3])
    n = 16  # longer than window × depth
    cached = generate_tokens(model, labels, n, options, torch.Generator().manual_seed(5))
    full = generate_tokens(model, labels, n, options, torch.Generator().manual_seed(5), recompute=True)
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=0)
    assert cached.abs().sum() > 0


def test_cache_size_is_bounded_by_the_window():
    model = perturbed(depth=2, window=3)
    sampler = TokenSampler(model, torch.tensor([1]), SamplingOptions(steps=2), num_tokens=20)
    sizes = []
    for _ in range(20):
        sampler.step()
        sizes.append(max(c.size() for c in sampler.caches))
    assert max(sizes) == 3 and sizes[-1] == 3


def test_rollback_keeps_the_prefix_and_regenerates_the_same_way():
    model = perturbed(depth=2, window=2)
    options = SamplingOptions(cfg=2.0, steps=3)
    sampler = TokenSampler(model, torch.tensor([2]), options, torch.Generator().manual_seed(0), num_tokens=14)
    first = sampler.run(14).clone()
    sampler.rollback(6)
    assert torch.equal(sampler.tokens, first[:, :6])
    sampler.generator.manual_seed(123)
    redo = sampler.run(14)
    assert torch.equal(redo[:, :6], first[:, :6])
    assert not torch.allclose(redo[:, 6], first[:, 6])
    # The continuation after a roll-back is what a fresh sampler given that prefix produces.
    fresh = generate_tokens(model, torch.tensor([2]), 14, options, torch.Generator().manual_seed(123),
                            prefix=first[:, :6])
    torch.testing.assert_close(redo, fresh, atol=1e-5, rtol=0)


def test_long_prefix_only_needs_window_times_depth_tokens():
    model = perturbed(depth=2, window=2)
    options = SamplingOptions(steps=3)
    prefix = generate_tokens(model, torch.tensor([1]), 30, options, torch.Generator().manual_seed(0))
    a = generate_tokens(model, torch.tensor([1]), 34, options, torch.Generator().manual_seed(9), prefix=prefix)
    b = generate_tokens(model, torch.tensor([1]), 34, options, torch.Generator().manual_seed(9), prefix=prefix,
                        recompute=True)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=0)


def test_temperature_scales_the_spread():
    model = perturbed(depth=2, window=2)
    labels = torch.zeros(64, dtype=torch.long)
    cold = generate_tokens(model, labels, 2, SamplingOptions(steps=4, temperature=0.3), torch.Generator().manual_seed(0))
    warm = generate_tokens(model, labels, 2, SamplingOptions(steps=4, temperature=1.0), torch.Generator().manual_seed(0))
    assert cold[:, 0].std(dim=0).mean() < 0.6 * warm[:, 0].std(dim=0).mean()


def test_bad_options_are_clear_errors():
    with pytest.raises(EqgenError, match="unknown solver"):
        SamplingOptions(solver="rk4")
    with pytest.raises(EqgenError, match="cfg schedule"):
        SamplingOptions(cfg_schedule="cosine")
    model = perturbed()
    with pytest.raises(EqgenError, match="roll back"):
        TokenSampler(model, torch.tensor([0]), SamplingOptions(), num_tokens=4).rollback(3)

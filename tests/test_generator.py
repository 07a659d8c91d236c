"""EquivariantGenerator: presets, the window, position masks, and a tiny training that learns."""
import pytest
import torch

from eqgen.configs import from_preset
from eqgen.generator import GENERATOR_PRESETS, EquivariantGenerator, GeneratorConfig, window_mask


def tiny(**overrides):
    torch.manual_seed(0)
    return EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, "tiny", **overrides))


@pytest.mark.parametrize("name,params", [("S", 127_336_064), ("B", 295_623_424), ("L", 644_545_280),
                                         ("H", 1_203_268_352)])
def test_paper_presets_have_the_official_parameter_counts(name, params):
    with torch.device("meta"):
        model = EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, name))
    assert sum(p.numel() for p in model.parameters()) == params


def test_official_places_large_model_parameter_count():
    with torch.device("meta"):
        model = EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, "L", num_classes=30,
                                                 class_tokens=16))
    assert sum(p.numel() for p in model.parameters()) == 643_502_848


def test_window_mask():
    m = window_mask(7, 2)
    for i in range(7):
        assert m[i].nonzero().flatten().tolist() == list(range(max(0, i - 2), i + 1))
    assert torch.equal(window_mask(5, None), torch.ones(5, 5, dtype=torch.bool).tril())


@torch.no_grad()
def test_outputs_depend_only_on_the_window_of_previous_tokens():
    model = tiny(depth=2, window=2).eval()
    tokens = torch.randn(1, 12, 8)
    labels = torch.tensor([1])
    z = model.condition(tokens, model.class_emb(labels))
    changed = tokens.clone()
    changed[:, 3] += 1.0
    z2 = model.condition(changed, model.class_emb(labels))
    moved = (z2 - z).abs().amax(dim=(0, 2)) > 1e-6
    # Output i conditions token i and sees tokens up to i-1; token 3 reaches outputs 4 .. 3 + 1 + window·depth - 1.
    assert moved.nonzero().flatten().tolist() == list(range(4, 4 + 2 * 2 + 1))


def test_position_mask_restricts_the_loss():
    model = tiny().eval()
    tokens, labels = torch.randn(2, 8, 8), torch.tensor([0, 1])
    only = torch.zeros(8, dtype=torch.bool)
    only[3] = True
    tokens_changed = tokens.clone()
    tokens_changed[:, 5:] = 100.0  # targets outside the mask (and after it) must not matter
    torch.manual_seed(1)
    a = model(tokens, labels, position_mask=only)
    torch.manual_seed(1)
    b = model(tokens_changed, labels, position_mask=only)
    torch.testing.assert_close(a, b)


def test_training_reduces_the_loss():
    model = tiny()
    data = torch.randn(4, 8, 8).cumsum(dim=1) * 0.3  # smooth sequences: predictable from the previous token
    labels = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss = model(data, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


def test_save_and_load_roundtrip(tmp_path):
    model = tiny().eval()
    model.save_pretrained(tmp_path / "g")
    again = EquivariantGenerator.from_pretrained(tmp_path / "g")
    tokens = torch.randn(1, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(again.condition(tokens, again.class_emb(torch.tensor([2]))),
                                   model.condition(tokens, model.class_emb(torch.tensor([2]))))

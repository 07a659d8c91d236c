"""EquivariantGenerator: presets, the window, RoPE, label dropout, position masks, a tiny training, saving."""
import pytest
import torch

from eqgen.configs import from_preset
from eqgen.errors import EqgenError
from eqgen.generator import (GENERATOR_PRESETS, NULL_LABEL, EquivariantGenerator, GeneratorConfig, apply_rope,
                             rope_angles, window_mask)


def tiny(**overrides):
    torch.manual_seed(0)
    return EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, "tiny", **overrides))


def num_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,millions", [("S", 127.3), ("B", 295.6), ("L", 644.5), ("H", 1203.2)])
def test_paper_presets_parameter_counts(name, millions):
    # Paper Table 7 shapes with 1,000 classes. (The paper prints 151M for S; its shapes give 127.3M.)
    with torch.device("meta"):
        model = EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, name))
    assert round(num_params(model) / 1e6, 1) == millions


def test_official_places_large_model_has_exactly_its_parameters():
    # keys_generator_large_places.json: large_model, 30 classes, buffer_size 16 -> 643,502,848 elements.
    with torch.device("meta"):
        model = EquivariantGenerator(from_preset(GeneratorConfig, GENERATOR_PRESETS, "L", num_classes=30))
    assert num_params(model) == 643_502_848


def test_window_mask_is_a_causal_band():
    pos = torch.arange(7)
    m = window_mask(pos, pos, 2)
    for i in range(7):
        assert m[i].nonzero().flatten().tolist() == list(range(max(0, i - 2), i + 1))
    assert torch.equal(window_mask(pos, pos, None), torch.ones(7, 7, dtype=torch.bool).tril())
    # Only differences matter: shifting every position changes nothing (the sampler's cache relies on it).
    assert torch.equal(window_mask(pos + 100, pos + 100, 2), m)


def test_rope_rotates_pairs_and_depends_only_on_relative_position():
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i, j):
        qi = apply_rope(q, *rope_angles(torch.tensor([i]), 8))
        kj = apply_rope(k, *rope_angles(torch.tensor([j]), 8))
        return (qi * kj).sum()

    torch.testing.assert_close(score(5, 2), score(13, 10))
    assert not torch.allclose(score(5, 2), score(5, 3))
    rotated = apply_rope(q, *rope_angles(torch.tensor([3]), 8))
    torch.testing.assert_close(rotated.unflatten(-1, (4, 2)).norm(dim=-1), q.unflatten(-1, (4, 2)).norm(dim=-1))


@torch.no_grad()
@pytest.mark.parametrize("window,depth", [(2, 2), (1, 3)])
def test_a_token_reaches_exactly_window_times_depth_outputs(window, depth):
    model = tiny(window=window, depth=depth).eval()
    tokens, labels = torch.randn(1, 14, 8), torch.tensor([1])
    changed = tokens.clone()
    changed[:, 3] += 1.0
    moved = (model.condition(changed, labels) - model.condition(tokens, labels)).abs().amax(dim=(0, 2)) > 1e-6
    # Output i conditions token i from tokens < i: token 3 moves outputs 4 … 4 + window·depth.
    assert moved.nonzero().flatten().tolist() == list(range(4, 5 + window * depth))


@torch.no_grad()
def test_output_zero_comes_from_the_class_alone():
    model = tiny().eval()
    labels = torch.tensor([0, 1])
    z = model.condition(torch.randn(2, 5, 8), labels)
    torch.testing.assert_close(z[:, 0], model.condition(torch.randn(2, 3, 8), labels)[:, 0])
    assert not torch.allclose(z[0, 0], z[1, 0])
    assert not torch.allclose(model.condition(torch.zeros(2, 5, 8), torch.tensor([NULL_LABEL] * 2))[:, 0], z[:, 0])


def test_training_draws_label_dropout_then_the_position_shift_then_the_loss():
    model = tiny(label_dropout=1.0, rope_shift=5)
    tokens, labels = torch.randn(2, 6, 8), torch.tensor([0, 3])
    torch.manual_seed(4)
    trained = model.train()(tokens, labels)
    # Replayed: every label dropped to the null class, positions start at the drawn shift.
    torch.manual_seed(4)
    torch.rand(2)
    start = int(torch.randint(0, 5, (1,)))
    model.eval()
    with torch.no_grad():
        z = model.condition(tokens, torch.tensor([NULL_LABEL] * 2), start)
        x0 = tokens.reshape(-1, 8).repeat(2, 1)
        noise = torch.randn_like(x0)
        t = torch.rand(len(x0), 1) * (1 - 1e-5) + 1e-5
        pred = model.head(t * noise + (1 - t) * x0, t[:, 0], z.reshape(-1, 32).repeat(2, 1))
    torch.testing.assert_close(trained.detach(), ((pred - (noise - x0)) ** 2).mean())


def test_position_mask_restricts_the_loss():
    model = tiny().eval()
    tokens, labels = torch.randn(2, 8, 8), torch.tensor([0, 1])
    only = torch.zeros(8, dtype=torch.bool)
    only[3] = True
    changed = tokens.clone()
    changed[:, 4:] = 100.0  # after position 3: neither its target nor its context
    losses = []
    for x in (tokens, changed):
        torch.manual_seed(1)
        losses.append(model(x, labels, position_mask=only))
    torch.testing.assert_close(losses[0], losses[1])
    torch.manual_seed(1)
    everywhere = model(tokens, labels, position_mask=torch.ones(8, dtype=torch.bool))
    torch.manual_seed(1)
    torch.testing.assert_close(everywhere, model(tokens, labels))
    with pytest.raises(EqgenError, match="position_mask"):
        model(tokens, labels, position_mask=torch.zeros(8, dtype=torch.bool))


def test_training_reduces_the_loss():
    model = tiny()
    data = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model(data, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10


def test_save_and_load_roundtrip(tmp_path):
    model = tiny().eval()
    model.save_pretrained(tmp_path / "g")
    again = EquivariantGenerator.from_pretrained(tmp_path / "g")
    assert again.config == model.config
    tokens, labels = torch.randn(1, 5, 8), torch.tensor([2])
    with torch.no_grad():
        torch.testing.assert_close(again.condition(tokens, labels), model.condition(tokens, labels))
    tiny(depth=3).save_pretrained(tmp_path / "other")
    (tmp_path / "g" / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(EqgenError, match="blocks.2"):
        EquivariantGenerator.from_pretrained(tmp_path / "g")


def test_weights_under_the_earlier_names_load(tmp_path):
    """Weights written while the cross-attention query was `attn2.qkv` and the null class `fake_latent` (the
    official names, which eqgen used too) load under today's names."""
    from eqgen.checkpoint import WEIGHTS, save_weights

    model = tiny().eval()
    model.save_pretrained(tmp_path / "g")
    today = model.state_dict()
    earlier = {k.replace(".attn2.q.", ".attn2.qkv.").replace("null_class", "fake_latent"): v for k, v in today.items()}
    assert "blocks.1.attn2.qkv.weight" in earlier and "fake_latent" in earlier and "null_class" not in earlier
    save_weights(tmp_path / "g" / WEIGHTS, earlier)
    again = EquivariantGenerator.from_pretrained(tmp_path / "g")
    assert again.state_dict().keys() == today.keys()
    assert all(torch.equal(again.state_dict()[k], v) for k, v in today.items())
    assert EquivariantGenerator.upgrade_state_dict(today).keys() == today.keys()   # today's names stay


def test_bad_inputs_are_one_line_errors():
    model = tiny()
    with pytest.raises(EqgenError, match=r"\[batch, length, 8\]"):
        model(torch.randn(2, 5, 7), torch.tensor([0, 1]))
    with pytest.raises(EqgenError, match="labels must lie"):
        model(torch.randn(2, 5, 8), torch.tensor([0, 4]))
    with pytest.raises(EqgenError, match="2 labels for 3"):
        model(torch.randn(3, 5, 8), torch.tensor([0, 1]))
    with pytest.raises(EqgenError, match="heads"):
        tiny(width=30)
    with pytest.raises(EqgenError, match="window"):
        tiny(window=0)

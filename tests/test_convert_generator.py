"""Parity with the official generator through the converter: every recorded output of shared/fixtures/official,
in float64 against the float32 reference (the bound is explained in parity.py)."""
import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from eqgen.configs import from_preset
from eqgen.convert.generator import convert_generator_state_dict, load_official_generator
from eqgen.errors import EqgenError
from eqgen.flow import cfg_scale, guide, solve, timestep_embedding
from eqgen.generator import (GENERATOR_PRESETS, NULL_LABEL, GeneratorConfig, Rope, apply_rope, rope_angles,
                             window_mask)
from eqgen.sampling import TokenSampler
from parity import assert_parity, double, normalised_ulps

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/official"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="official fixtures (shared/fixtures/official) absent")
RUNS = [("ar_cfg1", 1.0, "linear", 0), ("ar_cfg3_linear", 3.0, "linear", 0),
        ("ar_cfg2_const_prefix3_long", 2.0, "constant", 3)]


def official_kwargs():
    return json.loads((FIXTURES / "generator_tiny_config.json").read_text())["constructor_kwargs"]


def load_tiny():
    # The state dict holds no arguments: the head count comes from the constructor keywords, the rest
    # (window 3, shift 16, 1 noise draw) too.
    return load_official_generator(FIXTURES / "generator_tiny_state_dict.safetensors", heads=4, window=3,
                                   noise_draws=1, train_tokens=8)


@pytest.fixture(scope="module")
def model():
    return load_tiny().double()


@pytest.fixture(scope="module")
def io():
    return double(load_file(FIXTURES / "generator_tiny_io.safetensors"))


close = assert_parity


def test_config_matches_the_official_tiny_preset(model):
    config, _ = convert_generator_state_dict(load_file(FIXTURES / "generator_tiny_state_dict.safetensors"),
                                             official_kwargs())
    assert config == model.config == from_preset(GeneratorConfig, GENERATOR_PRESETS, "official_tiny")


@torch.no_grad()
@pytest.mark.parametrize("L", [8, 12])
def test_transformer_outputs_block_by_block(model, io, L):
    tokens, labels = io[f"enc.tokens_L{L}"], io["enc.labels"]
    close(model.class_emb(labels), io["enc.class_embedding"])
    close(model.condition(tokens, labels), io[f"enc.out_L{L}"])
    close(model.condition(tokens, torch.full_like(labels, NULL_LABEL)), io[f"enc.out_uncond_L{L}"])
    positions = torch.arange(L)
    assert torch.equal(window_mask(positions, positions, model.config.window), io[f"enc.self_attn_mask_L{L}"])
    # The fixture holds [class tokens; image tokens] entering block 0 and after each block.
    c = model.z_proj_ln(model.class_emb(labels)[:, None] + model.class_pos)
    x = model.z_proj_ln(model.z_proj(tokens))
    close(torch.cat([c, x], 1), io[f"enc.blocks_in_L{L}"])
    rope = Rope(positions, *rope_angles(positions, 16))
    for i, block in enumerate(model.blocks):
        kv, c_next = block.class_step(c)
        x, c = block(x, kv, rope), c_next
        close(torch.cat([c, x], 1), io[f"enc.block{i}_out_L{L}"])


def test_rope_tables(io):
    for L in (8, 12):
        close(torch.stack(rope_angles(torch.arange(L), 16), -1), io[f"rope.freqs_cis_eval_L{L}"])
    torch.manual_seed(1234)  # the training shift is one draw of randint(0, 16) from the global RNG
    shift = torch.randint(0, 16, (1,))
    assert torch.equal(shift, io["rope.train_seed1234_bias"])
    close(torch.stack(rope_angles(torch.arange(8) + shift, 16), -1), io["rope.freqs_cis_train_seed1234_L8"])
    q = io["rope.q_in"].transpose(1, 2)  # fixture layout (B, L, heads, hd) -> eqgen's (B, heads, L, hd)
    close(apply_rope(q, *rope_angles(torch.arange(8), 16)).transpose(1, 2), io["rope.q_out_eval"])


@torch.no_grad()
def test_layernorm_eps_probes(model, io):
    x, block = io["ln_probe.x"], model.blocks[0]
    for name, module in [("z_proj_ln", model.z_proj_ln), ("encoder_norm", model.norm), ("block0.norm1", block.norm1),
                         ("block0.norm2", block.norm2), ("block0.cross_norm", block.cross_norm),
                         ("block0.cross_cond_norm", block.cross_cond_norm)]:
        assert_parity(module(x), io[f"ln_probe.{name}"], normalised_ulps(x))
    xw = io["ln_probe.xw"]
    assert_parity(model.head.res_blocks[0].in_ln(xw), io["ln_probe.diffloss_res0_in_ln"], normalised_ulps(xw))
    assert_parity(model.head.final_layer.norm_final(xw), io["ln_probe.diffloss_final_norm"], normalised_ulps(xw))


@torch.no_grad()
def test_flow_head_and_cfg(model, io):
    head, x, t, c = model.head, io["mlp.x"], io["mlp.t"], io["mlp.c"]
    close(timestep_embedding(t), io["mlp.t_freq"])
    close(head.time_embed(t), io["mlp.t_embed"])
    close(head(x, t, c), io["mlp.out"])
    # c: 3 conditional rows, then 3 unconditional ones; both branches in one head call, as the solver makes it
    guided = guide(head(torch.cat([x[:3], x[:3]]), t, c), float(io["mlp_cfg.scale"]))
    close(torch.cat([guided, guided]), io["mlp_cfg.out"])


@torch.no_grad()
def test_euler_ode(model, io):
    close(solve(model.head, io["ode.c"], io["ode.noise"], steps=10), io["ode.out"])
    guided = solve(model.head, io["ode_cfg.c"], io["ode_cfg.noise"][:2], steps=10, cfg=float(io["ode_cfg.scale"]))
    close(torch.cat([guided, guided]), io["ode_cfg.out"])
    g = torch.Generator().manual_seed(99)  # diffloss.sample after torch.manual_seed(99): one randn(4, 8)
    noise = torch.randn(4, 8, generator=g).double()
    close(noise, io["diffloss_sample.seed99_noise"])  # equal but for rounding: randn's kernels differ per CPU
    close(solve(model.head, io["diffloss_sample.c"], noise, steps=10), io["diffloss_sample.out"])


@torch.no_grad()
def test_loss_value_with_replayed_rng(io):
    """In float32: the loss replays the official float32 draws of t and the noise."""
    model, imgs = load_tiny(), io["loss.imgs"].float()
    torch.manual_seed(777)
    close(model(imgs, io["loss.labels"]), io["loss.value"])
    close(model.condition(imgs, io["loss.labels"]).reshape(16, 64), io["loss.z_cond"])


@pytest.mark.parametrize("run,cfg,schedule,prefix", RUNS)
@pytest.mark.parametrize("mode", ["cached", "recompute"])
def test_autoregressive_runs(model, io, run, cfg, schedule, prefix, mode):
    expected = io[f"{run}.tokens"][:, :, 0].transpose(1, 2)  # official [B, C, 1, L] -> [B, L, C]
    sampler = TokenSampler(model, torch.tensor([3, 7]), expected.shape[1], cfg=cfg, cfg_schedule=schedule,
                           steps=10, rng=int(io[f"{run}.seed"]), mode=mode)
    sampler.start(io["loss.imgs"][:, :prefix])
    for i in range(expected.shape[1] - prefix):
        close(sampler.condition(), io[f"{run}.step_cond"][i])
        assert cfg_scale(sampler.length, expected.shape[1], cfg, schedule) == pytest.approx(
            float(io[f"{run}.step_cfg"][i]), abs=1e-12)
        sampler.step()
    close(sampler.tokens, expected)


def test_the_full_size_places_key_list_converts():
    keys = json.loads((FIXTURES / "keys_generator_large_places.json").read_text())["keys"]
    state = {k["key"]: torch.empty(k["shape"], device="meta") for k in keys}
    config, converted = convert_generator_state_dict(state, {"model": "large_model", "cond_length": 3,
                                                             "shift_num": 16, "diffusion_batch_mul": 4})
    assert config == from_preset(GeneratorConfig, GENERATOR_PRESETS, "L", num_classes=30)
    assert sum(t.numel() for t in converted.values()) == 643_502_848


def test_an_official_checkpoint_file_loads_its_ema_weights_and_args(tmp_path, io):
    ema = load_file(FIXTURES / "generator_tiny_state_dict.safetensors")
    raw = {k: v + 1.0 for k, v in ema.items()}  # decoy: the non-EMA copy must be ignored
    args = argparse.Namespace(model="tiny_model", cond_length=3, shift_num=16, diffusion_batch_mul=1, token_num=8,
                              buffer_size=4, class_num=10, label_drop_prob=0.1, attn_dropout=0.1, proj_dropout=0.1)
    torch.save({"model": raw, "model_ema": ema, "optimizer": {"state": {}}, "epoch": 3, "args": args},
               tmp_path / "checkpoint-last.pth")
    model = load_official_generator(tmp_path / "checkpoint-last.pth").double()
    assert model.config == from_preset(GeneratorConfig, GENERATOR_PRESETS, "official_tiny")
    with torch.no_grad():
        close(model.condition(io["enc.tokens_L8"], io["enc.labels"]), io["enc.out_L8"])


class Gadget:  # a class torch.load must never instantiate
    pass


def test_refuses_what_does_not_fit_or_is_unsafe(tmp_path):
    state = load_file(FIXTURES / "generator_tiny_state_dict.safetensors")
    with pytest.raises(EqgenError, match="heads=N"):
        convert_generator_state_dict(state)
    broken = dict(state)
    broken.pop("encoder_blocks.1.attn.proj.weight")
    broken["encoder_blocks.0.mlp.fc2.weight"] = torch.zeros(3, 3)
    save_file(broken, tmp_path / "bad.safetensors")
    with pytest.raises(EqgenError, match=r"missing: blocks.1.attn.proj.weight.*wrong shape: blocks.0.mlp.fc2.weight"):
        load_official_generator(tmp_path / "bad.safetensors", heads=4)
    torch.save({"model_ema": state, "args": Gadget()}, tmp_path / "unsafe.pth")
    with pytest.raises(EqgenError, match="can read safely"):
        load_official_generator(tmp_path / "unsafe.pth")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(EqgenError, match="can read safely"):
        load_official_generator(tmp_path / "junk.ckpt")

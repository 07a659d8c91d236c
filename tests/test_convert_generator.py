"""Parity with the official generator: every recorded output of ../shared/fixtures/official, via the converter."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from eqgen.convert.generator import convert_generator
from eqgen.errors import EqgenError
from eqgen.flow import cfg_scale, guided_velocity, solve, timestep_embedding
from eqgen.generator import rope_angles, apply_rope, window_mask
from eqgen.sampling import SamplingOptions, generate_tokens

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/official"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="official fixtures (../shared/fixtures/official) absent")
ATOL = 3e-6


@pytest.fixture(scope="module")
def model():
    kwargs = json.loads((FIXTURES / "generator_tiny_config.json").read_text())["constructor_kwargs"]
    return convert_generator(FIXTURES / "generator_tiny_state_dict.safetensors", **kwargs)


@pytest.fixture(scope="module")
def io():
    return load_file(FIXTURES / "generator_tiny_io.safetensors")


def close(a, b):
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("L", [8, 12])
def test_transformer_outputs(model, io, L):
    tokens, labels = io[f"enc.tokens_L{L}"], io["enc.labels"]
    close(model.class_emb(labels), io["enc.class_embedding"])
    close(model.condition(tokens, model.class_emb(labels)), io[f"enc.out_L{L}"])
    close(model.condition(tokens, model.class_embedding(None, 2)), io[f"enc.out_uncond_L{L}"])
    assert torch.equal(window_mask(L, model.config.window), io[f"enc.self_attn_mask_L{L}"])
    # Block by block: the fixture holds [class tokens; image tokens] after each block.
    kvs, _ = model.class_context(model.class_emb(labels))
    x = model.embed(tokens)
    close(x, io[f"enc.blocks_in_L{L}"][:, 4:])
    cos, sin = model.rope(0, L, tokens.device)
    for i, (block, kv) in enumerate(zip(model.blocks, kvs)):
        x = block(x, kv, cos, sin, window_mask(L, model.config.window))
        close(x, io[f"enc.block{i}_out_L{L}"][:, 4:])


def test_rope(io):
    for L in (8, 12):
        cos, sin = rope_angles(torch.arange(L), 16)
        close(torch.stack([cos, sin], -1), io[f"rope.freqs_cis_eval_L{L}"])
    cos, sin = rope_angles(torch.arange(8) + int(io["rope.train_seed1234_bias"]), 16)
    close(torch.stack([cos, sin], -1), io["rope.freqs_cis_train_seed1234_L8"])
    cos, sin = rope_angles(torch.arange(8), 16)
    q = io["rope.q_in"].transpose(1, 2)  # fixture layout (B, L, heads, hd) -> eqgen's (B, heads, L, hd)
    close(apply_rope(q, cos, sin).transpose(1, 2), io["rope.q_out_eval"])


@torch.no_grad()
def test_layernorm_eps(model, io):
    x, block = io["ln_probe.x"], model.blocks[0]
    for name, module in [("z_proj_ln", model.z_proj_ln), ("encoder_norm", model.norm), ("block0.norm1", block.norm1),
                         ("block0.norm2", block.norm2), ("block0.cross_norm", block.cross_norm),
                         ("block0.cross_cond_norm", block.cross_cond_norm)]:
        close(module(x), io[f"ln_probe.{name}"])
    close(model.head.res_blocks[0].in_ln(io["ln_probe.xw"]), io["ln_probe.diffloss_res0_in_ln"])
    close(model.head.final_layer.norm_final(io["ln_probe.xw"]), io["ln_probe.diffloss_final_norm"])


@torch.no_grad()
def test_flow_head_and_cfg(model, io):
    head = model.head
    close(timestep_embedding(io["mlp.t"]), io["mlp.t_freq"])
    close(head.time_embed(io["mlp.t"]), io["mlp.t_embed"])
    close(head(io["mlp.x"], io["mlp.t"], io["mlp.c"]), io["mlp.out"])
    # CFG: rows 0-2 of c are conditional, 3-5 unconditional; the official duplicates the guided half.
    scale = float(io["mlp_cfg.scale"])
    v_cond = head(io["mlp.x"][:3], io["mlp.t"][:3], io["mlp.c"][:3])
    v_uncond = head(io["mlp.x"][:3], io["mlp.t"][3:], io["mlp.c"][3:])
    close(torch.cat([v_uncond + scale * (v_cond - v_uncond)] * 2), io["mlp_cfg.out"])


@torch.no_grad()
def test_euler_ode(model, io):
    out = solve(guided_velocity(model.head, io["ode.c"], None), io["ode.noise"], 10)
    close(out, io["ode.out"])
    guided = solve(guided_velocity(model.head, io["ode_cfg.c"], float(io["ode_cfg.scale"])), io["ode_cfg.noise"][:2], 10)
    close(torch.cat([guided, guided]), io["ode_cfg.out"])


def test_loss_value(model, io):
    model.eval()
    torch.manual_seed(777)
    with torch.no_grad():
        loss = model(io["loss.imgs"], io["loss.labels"])
    close(loss, io["loss.value"])


@pytest.mark.parametrize("run,cfg,schedule,prefix", [
    ("ar_cfg1", 1.0, "linear", 0),
    ("ar_cfg3_linear", 3.0, "linear", 0),
    ("ar_cfg2_const_prefix3_long", 2.0, "constant", 3),
])
@pytest.mark.parametrize("recompute", [False, True])
def test_autoregressive_sampling(model, io, run, cfg, schedule, prefix, recompute):
    expected = io[f"{run}.tokens"]  # [B, C, 1, L] in the official layout
    expected = expected[:, :, 0].transpose(1, 2)
    g = torch.Generator().manual_seed(int(io[f"{run}.seed"]))
    options = SamplingOptions(cfg=cfg, cfg_schedule=schedule, steps=10)
    tokens = generate_tokens(model, torch.tensor([3, 7]), expected.shape[1], options, g,
                             prefix=io["loss.imgs"][:, :prefix] if prefix else None, recompute=recompute)
    close(tokens, expected)
    steps = io[f"{run}.step_cfg"]
    assert [cfg_scale(prefix + i, expected.shape[1], cfg, schedule) for i in range(len(steps))] == \
        pytest.approx(steps.tolist())


def test_refuses_a_file_that_does_not_fit(tmp_path):
    state = load_file(FIXTURES / "generator_tiny_state_dict.safetensors")
    state.pop("encoder_blocks.1.attn.proj.weight")
    state["encoder_blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(EqgenError, match=r"missing: blocks.1.attn.proj.weight.*wrong shape: blocks.0.mlp.fc1.weight"):
        convert_generator(tmp_path / "bad.safetensors", encoder_num_heads=4)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(EqgenError, match="not a checkpoint eqgen can read safely"):
        convert_generator(tmp_path / "junk.ckpt")

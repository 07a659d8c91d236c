"""The paper's analyses: per-position loss, FLOPs and parameters, the 2-D grid baseline's tokens, the report."""
import json

import numpy as np
import pytest
import torch

from eqgen.cli import main
from eqgen.configs import from_preset
from eqgen.evaluation.costs import attended_pairs, attention_gflops, generator_costs
from eqgen.evaluation.positions import held_out_tokens, position_losses
from eqgen.generator import GENERATOR_PRESETS, GeneratorConfig
from eqgen.errors import EqgenError
from eqgen.report import TOKENS, ReportConfig, Results, early_steps, write_report
from eqgen.tokenizer import TOKENIZER_PRESETS, ColumnTokenizer, TokenizerConfig, patchify, unpatchify


# -- the 2-D grid baseline's tokens ------------------------------------------------------------------------

def test_patchify_and_unpatchify_are_inverse_and_read_patches_in_raster_order():
    latent = torch.randn(2, 3, 8, 16)
    tokens = patchify(latent, rows=4)
    assert tokens.shape == (2, 16, 24)
    assert torch.equal(unpatchify(tokens, 8, 4), latent)
    # Token 5 = grid row 1, grid column 1: latent rows 2..3, latent columns 4..7, features ordered (c, row, col).
    assert torch.equal(tokens[:, 5], latent[:, :, 2:4, 4:8].reshape(2, -1))


def test_a_grid_tokenizer_has_the_column_tokenizers_shapes_and_weights():
    columns = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, "tiny"))
    grid = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, "tiny", grid_rows=2))
    grid.load_state_dict(columns.state_dict())          # same parameters: only the cut of the latent differs
    images = torch.rand(1, 3, 16, 32) * 2 - 1
    assert grid.encode(images).shape == columns.encode(images).shape == (1, 8, 4)
    assert grid.decode(grid.encode(images)).shape == images.shape
    assert not torch.allclose(grid.encode(images), columns.encode(images))


def test_grid_inputs_that_do_not_fit_are_clear_errors():
    with pytest.raises(Exception, match="grid_rows 3 must divide"):
        from_preset(TokenizerConfig, TOKENIZER_PRESETS, "tiny", grid_rows=3)
    grid = ColumnTokenizer(from_preset(TokenizerConfig, TOKENIZER_PRESETS, "tiny", grid_rows=2))
    with pytest.raises(Exception, match="multiple of 8"):
        grid.encode(torch.zeros(1, 3, 16, 12))
    with pytest.raises(Exception, match="multiple of 2 tokens"):
        grid.decode(torch.zeros(1, 3, 4))


# -- per-position loss ------------------------------------------------------------------------------------

def test_position_losses_match_an_independent_computation(pipe):
    tokens, labels = held_out_tokens(pipe, per_class=2, tokens=6)
    assert tokens.shape == (8, 6, 4) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    loss, error = position_losses(pipe.generator, tokens, labels, draws=2, seed=3)
    assert loss.shape == error.shape == (6,) and (error > 0).all()
    again, _ = position_losses(pipe.generator, tokens, labels, draws=2, seed=3)
    np.testing.assert_array_equal(loss, again)
    # By hand: the same noise per sequence (drawn in the same order), times 1/4 and 3/4.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        z = pipe.generator.condition(tokens, labels)
        expected = torch.zeros(6)
        for t in (0.25, 0.75):
            noise = torch.randn(8, 1, 4, generator=g)
            for i in range(6):
                x_t = t * noise[:, 0] + (1 - t) * tokens[:, i]
                v = pipe.generator.head(x_t, torch.full((8,), t), z[:, i])
                expected[i] += (v - (noise[:, 0] - tokens[:, i])).pow(2).mean() / 2
    np.testing.assert_allclose(loss, expected.numpy(), rtol=1e-5)


def test_analyze_positions_command(tmp_path, capsys):
    from conftest import make_tiny_pipeline

    make_tiny_pipeline().save_pretrained(tmp_path / "model")
    assert main(["analyze", "positions", "--model", str(tmp_path / "model"), "-n", "2", "--tokens", "5",
                 "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "positions 1..4" in out and (tmp_path / "p.png").stat().st_size > 1000


# -- costs --------------------------------------------------------------------------------------------------

def test_attended_pairs_of_a_window_and_of_full_causal_attention():
    assert attended_pairs(16, None) == 16 * 17 // 2
    assert attended_pairs(16, 3) == 1 + 2 + 3 + 13 * 4
    assert attended_pairs(16, 15) == attended_pairs(16, None)
    cfg = from_preset(GeneratorConfig, GENERATOR_PRESETS, "S")
    assert attention_gflops(cfg, 16) == pytest.approx(4 * 512 * 58 * 16 / 1e9)


def test_generator_flops_against_a_count_of_the_matrix_multiplies():
    cfg = from_preset(GeneratorConfig, GENERATOR_PRESETS, "S")
    costs = generator_costs(cfg)
    assert costs["params"] == pytest.approx(127.3e6, rel=1e-3)
    # Per token and block: q,k,v,o (4 w²), cross-attention q,o (2 w²), MLP (8 w²): 2 FLOPs per multiply-add.
    # The class tokens (16) also pass through every block's MLP and cross-attention keys/values.
    w, L, K = 512, 16, 16
    blocks = cfg.depth * 2 * (14 * w * w * L + (8 + 2) * w * w * K)
    assert costs["transformer_gflops"] == pytest.approx(blocks / 1e9, rel=0.1)


def test_analyze_costs_command(capsys):
    assert main(["analyze", "costs"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in "SBLH") and "127.3M" in out


# -- the report ---------------------------------------------------------------------------------------------

def _record(level: float, fid: float, slope: float = 0.0) -> dict:
    loss = level + slope * np.arange(TOKENS)
    loss[0] = 2 * level
    return {"position_loss": loss.tolist(), "position_loss_se": [0.001] * TOKENS, "landscape_fid": fid,
            "reference_fid_real_vs_real": 1.0, "class_accuracy": 0.9, "attention_gflops": 0.1,
            "gflops": {"transformer_gflops": 0.2, "head_gflops": 0.1}, "seconds": 60.0}


def test_the_early_checkpoint_is_after_one_step_at_least():
    assert [early_steps(s) for s in (1, 2, 3, 4, 7, 800)] == [1, 1, 1, 1, 1, 200]


def test_report_settings_that_cannot_run_are_refused():
    with pytest.raises(EqgenError, match="steps ≥ 1, got 0"):
        ReportConfig(steps=0)
    with pytest.raises(EqgenError, match="per_class ≥ 2"):
        ReportConfig(per_class=1)
    assert main(["report", "--tokenizer-steps", "0"]) == 2


def test_the_report_states_what_its_numbers_say(tmp_path):
    results = Results(tmp_path / "results.json")
    results["config"] = {"steps": 8, "batch": 4, "cache_images": 10, "per_class": 2, "held_out": 2,
                         "long_multiple": 4, "long_per_class": 1, "tokenizer_steps": 2}
    odd = np.arange(1, TOKENS, 2)
    part = _record(0.5, 12.0)
    part["position_loss"] = np.where(np.isin(np.arange(TOKENS), odd), 0.52, 0.5).tolist()
    grid_part = _record(0.5, 40.0)
    grid_part["position_loss"] = np.where(np.isin(np.arange(TOKENS), odd), 0.9, 0.5).tolist()
    results["window"] = {**_record(0.5, 10.0), "early_position_loss": [1.0] * TOKENS,
                         "long": [{"colour_z": 0.5, "seam_ratio": 1.0, "texture_ratio": 1.0}] * 4}
    results["window, 8 of 16 positions"] = part
    results["2-D grid"] = _record(0.5, 14.0, slope=0.01)
    results["2-D grid, 8 of 16 positions"] = grid_part
    results["window, no RoPE shift"] = {**_record(0.5, 11.0),
                                        "long": [{"colour_z": 0.5, "seam_ratio": 2.0, "texture_ratio": 1.0}] * 4}
    assert json.loads((tmp_path / "results.json").read_text())["window"]["landscape_fid"] == 10.0
    doc = tmp_path / "docs" / "reproduction.md"
    write_report(results, doc, "eqgen report")
    text = doc.read_text()
    assert "in 5 minutes" in text                               # 5 experiments × 60 s
    sections = text.split("## ")
    assert "**reproduced**" in next(s for s in sections if s.startswith("Every position"))
    assert "**reproduced**" in next(s for s in sections if s.startswith("Positions never"))
    assert "**reproduced**" in next(s for s in sections if s.startswith("Column tokens"))
    assert "**reproduced**" in next(s for s in sections if s.startswith("The RoPE shift"))
    for png in ("positions", "zero_shot", "improvement", "long"):
        assert (tmp_path / "docs" / "images" / f"reproduction_{png}.png").exists()

"""The flow head, the flow-matching loss, guidance and the ODE solvers."""
import math

import pytest
import torch

from eqgen.errors import EqgenError
from eqgen.flow import (SOLVERS, FlowHead, cfg_scale, evaluations, flow_matching_loss, guide, solve, time_grid,
                        timestep_embedding)


def perturbed_head(seed=0):
    torch.manual_seed(seed)
    head = FlowHead(token_dim=4, cond_dim=6, width=16, depth=2)
    with torch.no_grad():
        for p in head.parameters():
            p += 0.2 * torch.randn(p.shape)
    return head


def test_timestep_embedding_is_cos_first_and_uses_t_as_is():
    t = torch.tensor([0.0, 0.5])
    e = timestep_embedding(t, 8)
    assert torch.equal(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.tensor([math.exp(-math.log(10000) * k / 4) for k in range(4)])
    torch.testing.assert_close(e[1], torch.cat([torch.cos(0.5 * freqs), torch.sin(0.5 * freqs)]))


def test_fresh_head_predicts_zero():
    head = FlowHead(token_dim=4, cond_dim=6, width=16, depth=2)
    assert torch.equal(head(torch.randn(3, 4), torch.rand(3), torch.randn(3, 6)), torch.zeros(3, 4))


def test_loss_is_the_velocity_mse_with_block_tiled_draws():
    head, x0, z = perturbed_head(), torch.randn(5, 4), torch.randn(5, 6)
    torch.manual_seed(3)
    loss = flow_matching_loss(head, x0, z, draws=2)
    # Replay the draws: noise for the 10 tiled rows [x0; x0], then t.
    torch.manual_seed(3)
    noise = torch.randn(10, 4)
    t = torch.rand(10, 1) * (1 - 1e-5) + 1e-5
    x0s, zs = torch.cat([x0, x0]), torch.cat([z, z])
    expected = ((head(t * noise + (1 - t) * x0s, t[:, 0], zs) - (noise - x0s)) ** 2).mean()
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_solvers_follow_an_exact_flow_to_its_data_point(solver):
    # All data at the point a: x_t = t·noise + (1−t)·a, so the exact velocity is (x − a)/t, and the last step
    # (from t = 1/steps) lands on a.
    a, noise, seen = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.3, 0.7]]), []

    def velocity(x, t):
        seen.append(t)
        return (x - a) / t

    torch.testing.assert_close(SOLVERS[solver](velocity, noise, time_grid(7)), a)
    assert min(seen) == pytest.approx(1 / 7) and max(seen) == 1.0  # never evaluated at t = 0
    assert len(seen) == evaluations(solver, 7) == (7 if solver == "euler" else 13)


def test_heun_is_second_order_and_euler_first():
    # dx/dt = x from t=1 to 0: x(0) = x(1)/e.
    def error(solver, steps):
        x1 = torch.tensor([1.0], dtype=torch.float64)
        return abs(SOLVERS[solver](lambda x, t: x, x1, time_grid(steps)) - math.exp(-1)).item()

    assert error("euler", 20) / error("euler", 40) == pytest.approx(2, rel=0.1)
    assert error("heun", 20) / error("heun", 40) == pytest.approx(4, rel=0.15)
    assert error("heun", 10) < error("euler", 100)


def test_time_grid_runs_from_noise_to_data_and_rho_crowds_the_data_end():
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    dense = time_grid(10, 1.5)
    assert dense[0] == 1.0 and dense[-1] == 0.0 and all(a > b for a, b in zip(dense, dense[1:]))
    assert dense[-2] < time_grid(10)[-2]  # the last step is shorter
    with pytest.raises(EqgenError, match="rho"):
        solve(perturbed_head(), torch.randn(2, 6), torch.randn(2, 4), steps=4, rho=0)


def test_guidance_interpolates_and_extrapolates_the_two_branches():
    head, x, t = perturbed_head(), torch.randn(3, 4), torch.rand(6)
    z = torch.randn(6, 6)
    v_cond, v_uncond = head(x, t[:3], z[:3]), head(x, t[3:], z[3:])
    v = head(torch.cat([x, x]), t, z)  # both branches in one call, as the solver makes it
    torch.testing.assert_close(guide(v, 1.0), v_cond)
    torch.testing.assert_close(guide(v, 0.0), v_uncond)
    torch.testing.assert_close(guide(v, 3.0), v_uncond + 3 * (v_cond - v_uncond))


def test_a_guided_solve_steps_along_the_guided_velocity():
    # One Euler step from t = 1 to 0: the result is noise − v_guided(noise, 1), with z = [cond; uncond].
    head, noise, z = perturbed_head(), torch.randn(3, 4), torch.randn(6, 6)
    one = torch.ones(3)
    v_cond, v_uncond = head(noise, one, z[:3]), head(noise, one, z[3:])
    torch.testing.assert_close(solve(head, z, noise, steps=1, cfg=2.5), noise - (v_uncond + 2.5 * (v_cond - v_uncond)))
    torch.testing.assert_close(solve(head, z[:3], noise, steps=1), noise - v_cond)  # cfg=None: one branch


def test_cfg_schedules():
    assert [cfg_scale(s, 4, 3.0, "linear") for s in range(4)] == [1.5, 2.0, 2.5, 3.0]
    assert cfg_scale(0, 4, 3.0, "constant") == 3.0
    with pytest.raises(EqgenError, match="cfg schedule"):
        cfg_scale(0, 4, 3.0, "cosine")


def test_solve_rejects_bad_options():
    head, z, noise = perturbed_head(), torch.randn(2, 6), torch.randn(2, 4)
    with pytest.raises(EqgenError, match="unknown solver"):
        solve(head, z, noise, solver="rk4")
    with pytest.raises(EqgenError, match="steps"):
        solve(head, z, noise, steps=0)

"""Generating column tokens one at a time: the sampling options, the windowed KV cache, prefill / decode, and
the token loop.

`SamplingOptions` is the one home of how tokens are sampled (seed, guidance, temperature, solver) and of its
defaults: eqgen's (`SamplingOptions()`), the official sampler's (`OFFICIAL`) and the panoramas' (`PANORAMA`).
Every entry point (Pipeline, TokenSampler, the app, the command line) takes one, or keywords naming its fields.

With windowed attention each layer of the next token reads only that layer's keys/values of the last `window`
tokens, so a cache holding just those makes the cost and memory of every token constant, however wide the
image grows. The receptive field is still window × depth tokens: a cached key already carries what its own
window saw below it.

The pieces, gpt-fast style: `prefill` (a prefix of tokens into empty caches), `decode_one_token`, and the
loop. `TokenSampler` is the loop as an object — start (optionally from a prefix), step one token, roll back to
column k, continue — which is what interactive editing needs (paper Fig. 6). `generate_tokens` runs it to the
end. Its `recompute` mode runs the transformer over the whole prefix at every step instead, the official
algorithm, kept for parity checks and benchmarks.

Randomness: one `randn(B, C)` per token (the ODE's start), drawn from the sampler's `rng` in token order and
nothing else, as the official sampler does — so the same seed gives the official tokens. Given one RNG (or seed)
per image instead, each image draws its own `randn(C)` per token, so an image depends on its own seed only, not
on the batch it was made in (how `eqgen sample --out-dir` makes sample sets of any size on any number of
processes).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .errors import EqgenError
from .distill import distilled_head
from .flow import DISTILLED, cfg_scale, check_solver, solve
from .generator import NULL_LABEL, ClassContext, EquivariantGenerator, receptive_field

MODES = ("cached", "recompute")


@dataclass(frozen=True)
class SamplingOptions:
    """How tokens are sampled. The defaults are eqgen's: Heun on a time grid denser near the data (rho 1.5),
    whose 10 steps (19 head evaluations per token) come closer to the exact ODE solution than the paper's 100
    Euler steps (benchmarks/bench_solvers.py), and guidance 3 rising linearly along the sequence.

    seed: the sampler's RNG is a CPU generator seeded with it; None draws from the global RNG (after
        torch.manual_seed(s), the official sampler's draws for seed s).
    cfg: the classifier-free guidance scale (1 = none); cfg_schedule: "linear" (official) rises from about 1 at
        the first token to cfg at the last, "constant" is cfg everywhere.
    temperature: scales the ODE's start noise (1.0 = the official sampler, which ignores its temperature;
        lower = calmer, less varied tokens).
    steps, solver, rho: the flow head's ODE solve (`flow.solve`); solver "distilled" samples with the model's
        distilled few-step head of `steps` evaluations instead (distill.py; rho is then the head's own).
    """

    seed: int | None = 0
    cfg: float = 3.0
    cfg_schedule: str = "linear"
    temperature: float = 1.0
    steps: int = 10
    solver: str = "heun"
    rho: float = 1.5

    def __post_init__(self):
        if self.seed is not None and not (isinstance(self.seed, numbers.Integral) and not isinstance(self.seed, bool)
                                          and 0 <= self.seed < 2**64):
            raise EqgenError(f"seed must be an integer from 0 to 2**64 - 1 (or None), got {self.seed!r}")
        if not (math.isfinite(self.cfg) and self.cfg >= 0):
            raise EqgenError(f"cfg must be a finite number ≥ 0, got {self.cfg}")
        cfg_scale(0, 1, self.cfg, self.cfg_schedule)  # an unknown schedule is refused here, not at the first step
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise EqgenError(f"temperature must be at least 0, got {self.temperature}")
        check_solver(self.solver, self.steps, self.rho)

    def replace(self, **changes) -> "SamplingOptions":
        """These options with the named fields changed (and checked); an unknown name is refused in one line."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = [name for name in changes if name not in names]
        if unknown:
            raise EqgenError(f"unknown sampling option(s) {', '.join(unknown)}; the options are {', '.join(names)}")
        return dataclasses.replace(self, **changes) if changes else self


# The official sampler's settings: 100 Euler steps on a uniform time grid, no guidance unless asked for, the
# global RNG. The low-level sampler (`TokenSampler`, `generate_tokens`) defaults to them, for parity.
OFFICIAL = SamplingOptions(seed=None, cfg=1.0, steps=100, solver="euler", rho=1.0)
# Panoramas (and the app, which grows one): constant guidance, since a linear ramp along a panorama would leave
# its left part barely guided.
PANORAMA = SamplingOptions(cfg_schedule="constant")


class KVCache:
    """One block's self-attention keys/values [B, heads, S, head_dim] of the last `window` tokens (of every
    token when window is None), with their positions [S]."""

    def __init__(self, window: int | None):
        self.window = window
        self.k = self.v = self.positions = None

    def update(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """Take in the new tokens' k, v [B, heads, P, head_dim] at `positions` [P]; return what they attend:
        the cached entries followed by the new ones."""
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
            positions = torch.cat([self.positions, positions])
        if self.window is None:
            self.k, self.v, self.positions = k, v, positions
        else:  # only what the next token can see; copies, so a long prefill's storage is not kept alive
            w = self.window
            self.k, self.v, self.positions = k[:, :, -w:].clone(), v[:, :, -w:].clone(), positions[-w:].clone()
        return k, v, positions

    def nbytes(self) -> int:
        return 0 if self.k is None else sum(t.untyped_storage().nbytes() for t in (self.k, self.v, self.positions))


RNG = torch.Generator | int | Sequence[torch.Generator | int] | None


def sampler_rng(options: SamplingOptions, rng: RNG = None,
                generator: RNG = None) -> torch.Generator | list[torch.Generator] | None:
    """The RNG a sampler draws from: `rng` when given (a seed becomes a CPU generator, the same draws as
    torch.manual_seed(seed); a sequence, one RNG per image), else the one `options.seed` names. `generator` is
    the earlier name of `rng`."""
    if generator is not None:
        if rng is not None:
            raise EqgenError("give the sampler's RNG as rng= (generator= is its earlier name), not both")
        rng = generator
    rng = options.seed if rng is None else rng
    if isinstance(rng, (list, tuple)):
        return [sampler_rng(options, r) for r in rng]
    return torch.Generator().manual_seed(int(rng)) if isinstance(rng, numbers.Integral) else rng


def prefill(model: EquivariantGenerator, tokens: torch.Tensor, context: ClassContext, start: int,
            caches: list[KVCache] | None) -> torch.Tensor:
    """Run tokens [B, P, C] at positions start … start+P−1 and return the condition of the token after them,
    [B, D]. With caches the tokens attend the cached ones and join them; without, they are the whole prefix."""
    if tokens.shape[1] == 0:
        return context.first
    return model.hidden(tokens, context, start, caches)[:, -1]


def decode_one_token(model: EquivariantGenerator, token: torch.Tensor, context: ClassContext, position: int,
                     caches: list[KVCache]) -> torch.Tensor:
    """The step after a token [B, C] at `position`: the condition of the next one, [B, D]."""
    return prefill(model, token[:, None], context, position, caches)


class TokenSampler:
    """Samples the tokens of B images left to right; `rollback(k)` forgets everything from column k on.

    cfg ≠ 1 runs the conditional and the unconditional (null class) branch as one batch of 2B, like the
    official sampler. `num_tokens` is the intended length: the linear cfg schedule rises along it (sampling may
    continue past it). `options` default to the official sampler's (`OFFICIAL`); keywords change single fields
    (`steps=10`). rng: a torch.Generator or a seed, or one of them per image; `options.seed` gives it when it
    is None (`generator=`, its earlier name, is accepted too).
    """

    def __init__(self, model: EquivariantGenerator, labels: torch.Tensor, num_tokens: int,
                 options: SamplingOptions = OFFICIAL, *, rng: RNG = None,
                 mode: str = "cached", generator: RNG = None, **changes):
        if mode not in MODES:
            raise EqgenError(f"unknown sampling mode {mode!r}; choose one of {', '.join(MODES)}")
        if num_tokens < 1:
            raise EqgenError(f"num_tokens must be at least 1, got {num_tokens}")
        if model.training:  # dropout would make the tokens random beyond the seed
            raise EqgenError("the generator is in training mode; call .eval() before sampling")
        self.model, self.num_tokens, self.mode = model, num_tokens, mode
        self.options = options.replace(**changes)
        # A distilled head (refused in one line if the model has none of these evaluations, or if it did not
        # learn this guidance or temperature).
        self.student = distilled_head(model, self.options) if self.options.solver == DISTILLED else None
        self.rng = sampler_rng(self.options, rng, generator)
        if isinstance(self.rng, list) and len(self.rng) != len(labels):
            raise EqgenError(f"{len(self.rng)} seeds for {len(labels)} images: give one per image")
        self.device, self.dtype = next(model.parameters()).device, next(model.parameters()).dtype
        self.batch = len(labels)
        labels = labels.to(self.device)
        if self.guided:
            labels = torch.cat([labels, torch.full_like(labels, NULL_LABEL)])
        with torch.no_grad():
            self.context = model.class_context(labels)
        self.start()

    @property
    def guided(self) -> bool:
        """Whether the unconditional branch runs beside the conditional one (not for a distilled head that
        learned the guided flow: it takes the guidance scale instead)."""
        return self.options.cfg != 1.0 and (self.student is None or not self.student.guidance_distilled)

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    def start(self, prefix: torch.Tensor | None = None) -> None:
        """Begin a new sequence, continuing `prefix` [B, P, C] when given."""
        C = self.model.config.token_dim
        if prefix is None:
            prefix = torch.zeros(self.batch, 0, C, device=self.device)
        elif prefix.ndim != 3 or prefix.shape[0] != self.batch or prefix.shape[2] != C:
            raise EqgenError(f"prefix must be [{self.batch}, length, {C}], got {list(prefix.shape)}")
        self.tokens = prefix.to(self.device, self.dtype)
        self.rollback(self.length)

    def rollback(self, k: int) -> None:
        """Keep columns 0 … k−1 and drop the rest; the next step generates column k.

        The cache is rebuilt by a prefill of the kept tokens that can still reach column k: the last
        window·depth + 1 of them (or all, without a window)."""
        if not 0 <= k <= self.length:
            raise EqgenError(f"cannot roll back to column {k}: the sequence has {self.length} tokens")
        self.tokens = self.tokens[:, :k]
        field = receptive_field(self.model.config.window, self.model.config.depth)
        self.fed = 0 if field is None or self.mode == "recompute" else max(0, k - field - 1)
        self.caches = [KVCache(self.model.config.window) for _ in self.model.blocks]
        self._z = None

    @torch.no_grad()
    def condition(self) -> torch.Tensor:
        """z [B or 2B, D]: the transformer's condition for the next token (cond rows, then uncond rows)."""
        if self._z is None:
            new = self.tokens[:, self.fed:]
            if self.guided:  # the unconditional branch sees the same tokens
                new = torch.cat([new, new])
            if self.mode == "recompute":
                self._z = prefill(self.model, new, self.context, 0, None)
            elif new.shape[1] == 1:
                self._z = decode_one_token(self.model, new[:, 0], self.context, self.fed, self.caches)
            else:  # after start or a roll-back
                self._z = prefill(self.model, new, self.context, self.fed, self.caches)
            if self.mode == "cached":
                self.fed = self.length
        return self._z

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Generate the next column; returns it, [B, C]."""
        z, o = self.condition(), self.options
        guided_flow = self.guided or (self.student is not None and self.student.guidance_distilled)
        scale = cfg_scale(self.length, self.num_tokens, o.cfg, o.cfg_schedule) if guided_flow else None
        noise = self.start_noise().to(self.device, self.dtype) * o.temperature  # drawn in float32 whatever the model's dtype
        if self.student is not None:
            token = self.student.sample(z, noise, scale)
        else:
            token = solve(self.model.head, z, noise, o.steps, o.solver, scale, o.rho)
        self.tokens = torch.cat([self.tokens, token[:, None]], dim=1)
        self._z = None
        return token

    def start_noise(self) -> torch.Tensor:
        """The next token's ODE start [B, C]: from the one RNG, or a row from each image's own."""
        C = self.model.config.token_dim
        if isinstance(self.rng, list):
            return torch.stack([torch.randn(C, generator=g, device=g.device) for g in self.rng])
        return torch.randn(self.batch, C, generator=self.rng, device=self.rng.device if self.rng is not None else "cpu")

    def cache_nbytes(self) -> int:
        return sum(cache.nbytes() for cache in self.caches)


@torch.no_grad()
def generate_tokens(model: EquivariantGenerator, labels: torch.Tensor, num_tokens: int,
                    options: SamplingOptions = OFFICIAL, *, prefix: torch.Tensor | None = None,
                    rng: RNG = None, mode: str = "cached", progress: bool = False,
                    generator: RNG = None, **changes) -> torch.Tensor:
    """Tokens [B, num_tokens, C] for labels [B] (NULL_LABEL = unconditional), continuing `prefix` [B, P, C]
    when given (its tokens are kept; columns P … num_tokens−1 are generated). options, rng, mode and keyword
    changes as for `TokenSampler`; by default the global RNG (then torch.manual_seed(s) first gives the
    official sampler's tokens for seed s)."""
    sampler = TokenSampler(model, labels, num_tokens, options.replace(**changes), rng=rng, mode=mode,
                           generator=generator)
    sampler.start(prefix)
    if sampler.length > num_tokens:
        raise EqgenError(f"the prefix has {sampler.length} tokens, more than num_tokens={num_tokens}")
    for _ in tqdm(range(sampler.length, num_tokens), disable=not progress, desc="tokens"):
        sampler.step()
    return sampler.tokens

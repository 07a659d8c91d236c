"""Generating column tokens left to right, with a windowed KV cache.

With windowed attention, token i attends only to tokens i−window … i in every layer, so each layer's cache
holds the keys/values of the last `window` tokens and nothing else: the cost and memory of a step do not grow
with the position, and an image of any width is generated in time linear in its width. What comes next
depends only on the last `window × depth + 1` tokens, which is also all a roll-back has to recompute.

The pieces, gpt-fast style: `prefill` (a prefix of tokens), `decode_one_token`, and the loop in
`TokenSampler` (start, step, roll back, continue), which `generate_tokens` runs to the end. `recompute=True`
runs the official algorithm instead (the whole sequence again at every step): same tokens, quadratic time.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .errors import EqgenError
from .flow import CFG_SCHEDULES, SOLVERS, cfg_scale, guided_velocity, solve
from .generator import EquivariantGenerator, history_needed, window_mask


class LayerCache:
    """One layer's self-attention keys/values of the last `window` tokens (all tokens if window is None),
    plus the layer's cross-attention keys/values of the class tokens."""

    def __init__(self, window: int | None, cross_kv: tuple[torch.Tensor, torch.Tensor]):
        self.window, self.cross_kv = window, cross_kv
        self.k = self.v = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new tokens' k/v [B, H, n, hd]; return what the new queries attend to."""
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        keep = k.shape[2] if self.window is None else min(self.window, k.shape[2])
        self.k, self.v = k[:, :, k.shape[2] - keep:], v[:, :, v.shape[2] - keep:]
        return k, v

    def size(self) -> int:
        return 0 if self.k is None else self.k.shape[2]


@dataclass
class SamplingOptions:
    cfg: float = 1.0              # classifier-free guidance scale (1 = none)
    cfg_schedule: str = "linear"  # linear: the scale rises from ~1 to cfg along `cfg_tokens` tokens; constant
    cfg_tokens: int | None = None # length of the linear ramp (default: the image's length, as officially)
    steps: int = 100              # ODE steps per token
    solver: str = "euler"         # euler (the paper's) or heun (second order)
    temperature: float = 1.0      # scales the starting noise of each token's ODE: < 1 gives calmer, less varied
                                  # columns, 1 is the model's distribution (the official code ignores it)

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise EqgenError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise EqgenError(f"unknown cfg schedule {self.cfg_schedule!r}; choose one of {', '.join(CFG_SCHEDULES)}")
        if self.steps < 1:
            raise EqgenError("steps must be at least 1")
        if self.temperature <= 0:
            raise EqgenError("temperature must be positive")


class TokenSampler:
    """Stateful left-to-right generation: `step()` adds one token, `rollback(k)` keeps tokens [0, k),
    `step()` again continues from there. `tokens` [B, n, C] holds what has been generated so far."""

    def __init__(self, model: EquivariantGenerator, labels: torch.Tensor, options: SamplingOptions,
                 generator: torch.Generator | None = None, prefix: torch.Tensor | None = None,
                 num_tokens: int | None = None):
        self.model, self.options = model.eval(), options
        self.total = num_tokens  # the planned length: the default ramp of the linear cfg schedule
        self.generator = generator or torch.Generator()
        self.device = next(model.parameters()).device
        self.batch = len(labels)
        self.guided = options.cfg != 1.0
        with torch.no_grad():
            class_embedding = model.class_embedding(labels.to(self.device))
            if self.guided:  # one forward for both: [cond; uncond]
                class_embedding = torch.cat([class_embedding, model.class_embedding(None, self.batch)])
            self.class_kv, self.first_condition = model.class_context(class_embedding)
        self.tokens = torch.zeros(self.batch, 0, model.config.token_dim, device=self.device)
        self._reset_cache()
        if prefix is not None:
            self.extend(prefix.to(self.device))

    @property
    def position(self) -> int:
        return self.tokens.shape[1]

    def _reset_cache(self) -> None:
        self.caches = [LayerCache(self.model.config.window, kv) for kv in self.class_kv]
        self.cached_upto = 0   # tokens [0, cached_upto) have been fed through the transformer
        self.next_condition = self.first_condition

    @torch.no_grad()
    def extend(self, tokens: torch.Tensor) -> None:
        """Append known tokens (a prefix to continue from, or accepted edits) without sampling them."""
        self.tokens = torch.cat([self.tokens, tokens], dim=1)
        self._catch_up()

    @torch.no_grad()
    def rollback(self, k: int) -> None:
        """Forget tokens k, k+1, …; the next `step()` regenerates token k."""
        if not 0 <= k <= self.position:
            raise EqgenError(f"cannot roll back to token {k}: {self.position} tokens exist")
        self.tokens = self.tokens[:, :k]
        self._reset_cache()
        self._catch_up()

    def _catch_up(self) -> None:
        """Feed the tokens not yet seen by the transformer. Only the last window × depth + 1 of them can
        influence what comes next, so a long prefix or a roll-back costs a bounded amount of work."""
        todo = self.tokens[:, self.cached_upto:]
        if todo.shape[1] == 0:
            return
        if self.cached_upto == 0:
            need = history_needed(self.model.config.window, self.model.config.depth)
            if need is not None and todo.shape[1] > need:
                self.cached_upto = self.position - need
                todo = self.tokens[:, self.cached_upto:]
            self.next_condition = prefill(self.model, self._both(todo), self.cached_upto, self.caches)
        else:
            for i in range(todo.shape[1]):
                self.next_condition = decode_one_token(self.model, self._both(todo[:, i:i + 1]),
                                                       self.cached_upto + i, self.caches)
        self.cached_upto = self.position

    def _both(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([tokens, tokens]) if self.guided else tokens

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Sample the next token [B, C] and append it."""
        o = self.options
        noise = torch.randn(self.batch, self.model.config.token_dim, generator=self.generator)
        noise = noise.to(self.device) * o.temperature
        scale = None
        if self.guided:
            ramp = o.cfg_tokens or self.total
            if o.cfg_schedule == "linear" and not ramp:
                raise EqgenError("the linear cfg schedule needs the planned length (num_tokens or cfg_tokens)")
            scale = cfg_scale(self.position, ramp or 1, o.cfg, o.cfg_schedule)
        token = solve(guided_velocity(self.model.head, self.next_condition, scale), noise, o.steps, o.solver)
        self.tokens = torch.cat([self.tokens, token[:, None]], dim=1)
        self.next_condition = decode_one_token(self.model, self._both(token[:, None]), self.position - 1, self.caches)
        self.cached_upto = self.position
        return token

    def run(self, num_tokens: int, progress: bool = False) -> torch.Tensor:
        """Step until `num_tokens` tokens exist; returns tokens [B, num_tokens, C]."""
        self.total = self.total or num_tokens
        for _ in tqdm(range(self.position, num_tokens), disable=not progress, desc="tokens", leave=False):
            self.step()
        return self.tokens


def prefill(model: EquivariantGenerator, tokens: torch.Tensor, start: int, caches: list[LayerCache]) -> torch.Tensor:
    """Feed tokens [B, n, C] at positions start … start+n−1 into empty caches; returns the condition of
    token start+n [B, D]."""
    n = tokens.shape[1]
    x = model.embed(tokens)
    cos, sin = model.rope(start, n, tokens.device)
    mask = window_mask(n, model.config.window, tokens.device)
    for block, cache in zip(model.blocks, caches):
        x = block(x, cache.cross_kv, cos, sin, mask, cache)
    return model.norm(x[:, -1])


def decode_one_token(model: EquivariantGenerator, token: torch.Tensor, position: int,
                     caches: list[LayerCache]) -> torch.Tensor:
    """Feed one token [B, 1, C] at `position`; returns the condition of the next token [B, D]. The cache
    holds at most `window` earlier tokens, all visible to the new one, so no mask is needed."""
    x = model.embed(token)
    cos, sin = model.rope(position, 1, token.device)
    for block, cache in zip(model.blocks, caches):
        x = block(x, cache.cross_kv, cos, sin, None, cache)
    return model.norm(x[:, -1])


def recompute_step(model: EquivariantGenerator, tokens: torch.Tensor, class_embedding: torch.Tensor,
                   position: int) -> torch.Tensor:
    """The official algorithm's step: the whole sequence through the transformer, keep one output."""
    return model.condition(tokens, class_embedding)[:, position]


@torch.no_grad()
def generate_tokens(model: EquivariantGenerator, labels: torch.Tensor, num_tokens: int,
                    options: SamplingOptions | None = None, generator: torch.Generator | None = None,
                    prefix: torch.Tensor | None = None, recompute: bool = False,
                    progress: bool = False) -> torch.Tensor:
    """Tokens [B, num_tokens, C] for labels [B], continuing `prefix` [B, n, C] if given.

    Noise is drawn as one `torch.randn(B, C, generator=generator)` per token on the CPU, in order, so a
    generator seeded with s reproduces the official sampler run after `torch.manual_seed(s)`."""
    options = options or SamplingOptions()
    generator = generator or torch.Generator()
    if num_tokens < 1:
        raise EqgenError("num_tokens must be at least 1")
    if prefix is not None and prefix.shape[1] > num_tokens:
        raise EqgenError(f"the prefix has {prefix.shape[1]} tokens, more than the {num_tokens} asked for")
    if not recompute:
        return TokenSampler(model, labels, options, generator, prefix, num_tokens).run(num_tokens, progress)
    return _generate_recompute(model, labels, num_tokens, options, generator, prefix, progress)


def _generate_recompute(model, labels, num_tokens, options, generator, prefix, progress):
    device = next(model.parameters()).device
    model.eval()
    B, C = len(labels), model.config.token_dim
    tokens = torch.zeros(B, num_tokens, C, device=device)
    start = 0 if prefix is None else prefix.shape[1]
    if prefix is not None:
        tokens[:, :start] = prefix.to(device)
    guided = options.cfg != 1.0
    class_embedding = model.class_embedding(labels.to(device))
    if guided:
        class_embedding = torch.cat([class_embedding, model.class_embedding(None, B)])
    for step in tqdm(range(start, num_tokens), disable=not progress, desc="tokens", leave=False):
        z = recompute_step(model, torch.cat([tokens, tokens]) if guided else tokens, class_embedding, step)
        noise = torch.randn(B, C, generator=generator).to(device) * options.temperature
        scale = cfg_scale(step, options.cfg_tokens or num_tokens, options.cfg, options.cfg_schedule) if guided else None
        tokens[:, step] = solve(guided_velocity(model.head, z, scale), noise, options.steps, options.solver)
    return tokens

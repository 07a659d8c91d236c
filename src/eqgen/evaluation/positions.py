"""The flow-matching loss per token position (paper Fig. 3/4): is every position the same task?

A model is scored on held-out renders of every class (teacher forcing, as in training). Every position sees the
same noise draws at the same times, so differences between positions are differences of the model, not of the
draws; the standard error is over the held-out images.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.landscapes import render_batch
from ..imageio import from_uint8

HELD_OUT_SEED = 10_000  # training renders use other seeds


@torch.no_grad()
def held_out_tokens(pipe, per_class: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [N, tokens, D] (× latent scale, as the generator sees them) of `per_class` fresh renders of every
    class, and their labels [N]."""
    classes = torch.arange(len(pipe.classes)).repeat_interleave(per_class)
    seeds = list(range(HELD_OUT_SEED, HELD_OUT_SEED + len(classes)))
    images = from_uint8(render_batch(classes.tolist(), seeds, tokens * pipe.token_width, pipe.height))
    return pipe.encode(images), classes.to(pipe.device)


@torch.no_grad()
def position_losses(generator, tokens: torch.Tensor, labels: torch.Tensor, draws: int = 8, seed: int = 0,
                    batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The loss of tokens [N, L, C] per position: (mean [L], standard error [L] over the N sequences).

    Draw k uses time t_k = (k + ½)/draws (a stratified grid over the flow's times) and one noise vector per
    sequence, shared by all its positions."""
    was_training = generator.training
    generator.eval()
    g = torch.Generator().manual_seed(seed)
    per_sequence = []
    for x0, y in zip(tokens.split(batch), labels.split(batch)):
        B, L, C = x0.shape
        z = generator.condition(x0, y).flatten(0, 1)
        error = torch.zeros(B, L, device=x0.device)
        for k in range(draws):
            noise = torch.randn(B, 1, C, generator=g).to(x0).expand(B, L, C)
            t = torch.full((B * L,), (k + 0.5) / draws, device=x0.device)
            x_t = (t.view(B, L, 1) * noise + (1 - t.view(B, L, 1)) * x0).flatten(0, 1)
            v = generator.head(x_t, t, z).view(B, L, C)
            error += (v - (noise - x0)).pow(2).mean(-1) / draws
        per_sequence.append(error.cpu())
    generator.train(was_training)
    losses = torch.cat(per_sequence).double().numpy()
    return losses.mean(0), losses.std(0, ddof=1) / np.sqrt(len(losses))

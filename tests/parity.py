"""Parity with the official float32 outputs that holds on every CPU and thread count.

The parity tests run eqgen in float64 on the official weights. eqgen's own rounding (~1e-16) then vanishes, and
what remains is the rounding of the float32 reference: a property of the fixture files, not of the kernels of
the machine running the test. A float32 result carries error of order float32's epsilon times the magnitude of
the activations it was computed from, compounded over the network's depth, so the bound is ULPS units of
epsilon at the reference's largest magnitude. The recorded outputs use at most ~11 of them (the tokenizer's
decoded image); the smallest slip `test_parity_catches.py` makes (a LayerNorm eps of 1e-5 for 1e-6) moves the
generator's output by ~30.

The few checks that replay the official random draws (which differ between float32 and float64) run in float32
under the same bound: they are shallow, or measured here at ≤ 3 units.
"""
import torch

EPS = torch.finfo(torch.float32).eps
ULPS = 16


def bound(reference: torch.Tensor, ulps: float = ULPS) -> float:
    return ulps * EPS * reference.detach().abs().max().item()


def assert_parity(ours: torch.Tensor, reference: torch.Tensor, ulps: float = ULPS) -> None:
    reference = reference.detach().double()
    torch.testing.assert_close(ours.detach().double(), reference, atol=bound(reference, ulps), rtol=0)


def units(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """The largest difference in units of EPS · max|reference| (what ULPS bounds)."""
    reference = reference.detach().double()
    return ((ours.detach().double() - reference).abs().max() / (EPS * reference.abs().max())).item()


def normalised_ulps(x: torch.Tensor, groups: int | None = None) -> float:
    """The bound for a normalisation probe. The probes have a large mean and a tiny spread, so subtracting the
    mean cancels log2(max|x| / σ) bits of the float32 input and the reference's error grows by that factor.
    `groups`: the GroupNorm's group count; None: a LayerNorm over the last dimension."""
    rows = x.flatten(0, -2) if groups is None else x.reshape(len(x), groups, -1)
    return ULPS * (rows.abs().amax(-1) / rows.std(-1)).max().item()


def double(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors in float64, the rest (labels, masks, seeds) as they are."""
    return {k: v.double() if v.is_floating_point() else v for k, v in tensors.items()}

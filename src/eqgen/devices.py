"""Devices and precisions: which device a run or a pipeline uses (under torchrun, which one of its GPUs), and
whether it computes in bf16."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .errors import EqgenError


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: CUDA, or a CPU with AVX512-BF16 or AMX (elsewhere CPU
    bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return True
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")   # torch.cpu's own checks
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def sampling_threads(requested: int | None = None) -> int:
    """Torch's CPU threads for sampling: `requested`, else OMP_NUM_THREADS where it is set, else one. Sampling is
    many small matrix products in sequence; one thread is as fast as two on an idle machine and many times
    faster on a busy one (benchmarks/bench_threads.py, docs/performance.md)."""
    if requested is not None:
        return requested
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return 1


PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of a training run: torch.bfloat16, or torch.float32 (no autocast)."""
    if name not in PRECISIONS:
        raise EqgenError(f"unknown precision {name!r} (use {', '.join(PRECISIONS)})")
    if name == "bf16" or (name == "auto" and native_bf16(device)):
        return torch.bfloat16
    return torch.float32


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EqgenError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EqgenError("--device cuda was asked for, but no CUDA device is available")
    return device


# Distributed set-up: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT.


def _init_distributed(device: torch.device) -> tuple[int, int]:
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def distributed_device(name: str) -> tuple[torch.device, int, int]:
    """This process's device (cuda:LOCAL_RANK under torchrun when `name` asks for CUDA), rank and world size;
    joins the process group when torchrun started several processes."""
    device = resolve_device(name)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return (device, *_init_distributed(device))

"""Measuring helpers shared by the benchmarks (run them from the repository root: python benchmarks/x.py)."""
from __future__ import annotations

import time
from pathlib import Path

import torch


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory_mb(fn, device: torch.device) -> float | None:
    """Extra peak memory of one call of `fn`, in MB (None where it cannot be measured)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")   # peak RSS := current RSS
        base = _rss_kb("VmRSS")
        fn()
        return (_rss_kb("VmHWM") - base) / 1024
    except (OSError, RuntimeError):
        return None


def seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best

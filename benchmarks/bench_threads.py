"""Sampling time against torch threads, on an idle machine and on a busy one, side by side in one run.

    python benchmarks/bench_threads.py                    # the built-in model, 1 thread vs every core
    python benchmarks/bench_threads.py --busy 2 --solver distilled --steps 4

Two jobs: one panorama (batch 1, `--width` px, as `eqgen panorama` and the page make them) and a batch of
`--batch` images (as `eqgen sample` and the evaluations make them). Each runs with 1 torch thread and with one
per core, first on the idle machine, then while `--busy` other processes keep cores busy (each a one-thread
matrix-multiply loop, the way other jobs share a laptop or a CI machine). Each time is the median of `--repeats`
runs; rows alternate between the settings, so load that changes during the run hits both alike.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch

from eqgen import Pipeline
from eqgen.sampling import PANORAMA, SamplingOptions


def burn(stop) -> None:
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def jobs(pipe, args):
    options = SamplingOptions(solver=args.solver, steps=args.steps)
    classes = [pipe.classes[i % len(pipe.classes)] for i in range(args.batch)]
    return {f"panorama {args.width} px (batch 1)":
            lambda: pipe.panorama(pipe.classes[1], args.width, progress=False, options=PANORAMA.replace(
                solver=args.solver, steps=args.steps)),
            f"sample {args.batch} images (batch {args.batch})": lambda: pipe.generate(classes, options=options)}


def measure(job, threads: list[int], repeats: int) -> dict[int, float]:
    times = {n: [] for n in threads}
    for _ in range(repeats):
        for n in threads:
            torch.set_num_threads(n)
            start = time.perf_counter()
            job()
            times[n].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--solver", default="heun")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--busy", type=int, default=os.cpu_count(), help="busy processes in the second half")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cores = os.cpu_count()
    threads = sorted({1, cores})
    pipe = Pipeline.from_pretrained(args.model)
    work = jobs(pipe, args)
    results = {}
    for load in ("idle", "busy"):
        stop = mp.Event()
        burners = [mp.Process(target=burn, args=(stop,)) for _ in range(args.busy if load == "busy" else 0)]
        for p in burners:
            p.start()
        try:
            for name, job in work.items():
                results[load, name] = measure(job, threads, args.repeats)
        finally:
            stop.set()
            for p in burners:
                p.join()
    print(f"{args.model}, {args.solver} {args.steps} steps, {cores} cores, busy = {args.busy} one-thread "
          f"matmul processes beside, median of {args.repeats}")
    print(f"\n{'job':<32} {'machine':<7}" + "".join(f"{f'{n} thread(s) s':>16}" for n in threads)
          + f"{f'{cores} vs 1 thread':>18}")
    for (load, name), t in results.items():
        print(f"{name:<32} {load:<7}" + "".join(f"{t[n]:>16.2f}" for n in threads) + f"{t[cores] / t[1]:>17.2f}x")


if __name__ == "__main__":
    main()

"""Rendering speed of the built-in landscapes: images per second, all classes mixed, one process.

    python benchmarks/bench_landscapes.py
"""
import time

from eqgen.data import CLASSES, iterate_landscapes, render_batch


def rate(fn, images: int, repeats: int = 3) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return images / best


def main():
    for height, width, batch in [(32, 32, 256), (64, 64, 256), (64, 1024, 16)]:
        classes = [CLASSES[i % len(CLASSES)] for i in range(batch)]
        r = rate(lambda: render_batch(classes, range(batch), width, height), batch)
        print(f"render_batch       {height:>3}x{width:<5} batch {batch:>3}: {r:8.1f} images/s")
    stream = iterate_landscapes(64, 64, 64, seed=0)
    r = rate(lambda: next(stream), 64)
    print(f"iterate_landscapes  64x64    batch  64: {r:8.1f} images/s (float tensors in [-1, 1])")


if __name__ == "__main__":
    main()

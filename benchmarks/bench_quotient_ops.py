"""Time the quotient operators against plain centering on batches shaped like real training.

    python benchmarks/bench_quotient_ops.py [--device cuda] [--repeats 200]

Shapes: GEOM-DRUGS (B = 48 molecules, N up to 180 atoms, padded with a mask) and Cα backbones
(B = 5, N = 256). For each it prints the median time of `center`, of `horizontal_projection` +
`mean_curvature` (what a quotient training step and SDE step add), their ratio, and that cost as a
fraction of a reference training step time (`--step-ms`, default 140 ms: an ET-Flow step on one
A100 from the paper's 4.1 it/s), which the paper's design keeps below 1%; `P+h solve` is the
same with the closed-form 3x3 filter instead of the two solves (`regularized_inverse(method=...)`).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

import qdiff.geometry.se3 as se3
from qdiff.geometry import center, horizontal_projection, mean_curvature

SHAPES = {"geom-drugs (B=48, N<=180)": (48, 180, True), "backbones (B=5, N=256)": (5, 256, False)}


def _timeit(fn, repeats: int, device: torch.device) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--step-ms", type=float, default=140.0, help="reference training step time")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    print(f"device={device} dtype={args.dtype} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'batch':28} {'center ms':>10} {'P+h ms':>10} {'ratio':>7} {'% of step':>10} {'P+h closed':>10}")
    for name, (b, n, ragged) in SHAPES.items():
        x = torch.randn(b, n, 3, generator=g).to(device, dtype)
        v = torch.randn(b, n, 3, generator=g).to(device, dtype)
        mask = None
        if ragged:  # GEOM-DRUGS sizes: 20..180 atoms
            sizes = torch.randint(20, n + 1, (b,), generator=g)
            mask = (torch.arange(n)[None] < sizes[:, None]).to(device)
        t_center = _timeit(lambda: center(v, mask), args.repeats, device)
        quotient = lambda: (horizontal_projection(x, v, mask), mean_curvature(x, mask))  # noqa: E731
        t_quot = _timeit(quotient, args.repeats, device)
        solve = se3.regularized_inverse
        se3.regularized_inverse = functools.partial(solve, method="closed_form")
        try:
            t_closed = _timeit(quotient, args.repeats, device)
        finally:
            se3.regularized_inverse = solve
        print(f"{name:28} {t_center:10.3f} {t_quot:10.3f} {t_quot / t_center:7.1f} {100 * t_quot / args.step_ms:9.2f}% {t_closed:10.3f}")


if __name__ == "__main__":
    main()

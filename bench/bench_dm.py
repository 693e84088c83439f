"""Benchmark: DM's streamed normal equations (`stitching.LeastSquares.update`) against a bare float64 GEMM.

For each channel shape c_in → c_out, one update of R float32 rows (a chunk of 256 images × positions, as
`fit_dm` feeds it) is timed three ways, best of --repeats run round-robin (so load from other processes on a
shared machine falls on all three alike), one BLAS thread:

  bare GEMM   XᵀX and XᵀY of rows already in float64 (the arithmetic floor of the normal equations)
  before      the previous update: the whole chunk converted to float64, Σx, Σy, XᵀX in full, XᵀY
  update      LeastSquares.update: float32 → float64 in cache-sized blocks of the augmented rows [X 1], the
              upper triangle of [X 1]ᵀ[X 1] by dsyrk (Σx and n come with it) and [X 1]ᵀY by dgemm

and printed as the share of the bare GEMM's speed (bare seconds / seconds; ≥ 0.70 is the target), with the
largest relative difference of the accumulated moments from float64 numpy sums.

    python bench/bench_dm.py            # ≈ 20 s
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial

import numpy as np
import threadpoolctl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from stitchlib.stitching import LeastSquares  # noqa: E402

SHAPES = ((64, 64, 256 * 16 * 16), (128, 64, 256 * 8 * 8), (512, 512, 256 * 4 * 4))


def best(fns: list, repeats: int) -> list[float]:
    """Best-of-``repeats`` seconds of each function, run round-robin."""
    out = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            out[i] = min(out[i], time.perf_counter() - t)
    return out


def before(x: np.ndarray, y: np.ndarray) -> None:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x.sum(0), y.sum(0), x.T @ x, x.T @ y


def update(c_in: int, c_out: int, x: np.ndarray, y: np.ndarray) -> None:
    LeastSquares(c_in, c_out).update(x, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'shape':>10} {'rows':>7} {'bare GEMM s':>11} {'before s':>9} {'update s':>9} "
          f"{'before/GEMM':>11} {'update/GEMM':>11} {'max rel. diff':>13}")
    with threadpoolctl.threadpool_limits(1):
        for c_in, c_out, n in SHAPES:
            x = rng.standard_normal((n, c_in), dtype=np.float32) + 1
            y = rng.standard_normal((n, c_out), dtype=np.float32)
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            t_gemm, t_before, t_update = best([lambda a=x64, b=y64: (a.T @ a, a.T @ b), partial(before, x, y),
                                               partial(update, c_in, c_out, x, y)], args.repeats)
            ls = LeastSquares(c_in, c_out)
            ls.update(x, y)
            g = ls.gram()
            diff = max(np.abs(g[:c_in, :c_in] - x64.T @ x64).max() / np.abs(x64.T @ x64).max(),
                       np.abs(ls.centred()[0] - x64.mean(0)).max() / np.abs(x64.mean(0)).max())
            print(f"{f'{c_in}→{c_out}':>10} {n:>7} {t_gemm:>11.4f} {t_before:>9.4f} {t_update:>9.4f} "
                  f"{t_gemm / t_before:>11.2f} {t_gemm / t_update:>11.2f} {diff:>13.1e}")


if __name__ == "__main__":
    main()

"""Calibration of stitchlib.uncertainty's intervals: coverage of the population linear CKA.

X ~ N(0, I_p), Y = XW + σE (W fixed, E standard normal) have population linear CKA
‖Σ_xy‖²_F / (‖Σ_xx‖_F ‖Σ_yy‖_F) = ‖W‖²_F / (√p ‖WᵀW + σ²I‖_F). For each setting, 200 data sets of n images are
drawn, each bootstrapped (200 replicates, its own seed), and the share of 95 % intervals holding the population
value is printed for the percentile, bias-corrected (bc, the workflow's) and BCa intervals. tests/test_uncertainty.py
runs two of these settings (bc); this is the full table of README "How sure is each number" (≈ 1–2 min).

    python bench/calibrate_uncertainty.py
"""

from __future__ import annotations

import os
import sys

import numpy as np
import threadpoolctl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from stitchlib import similarity as S  # noqa: E402
from stitchlib import uncertainty as U  # noqa: E402

SETTINGS = [("lcka", 3, 3, 200, 0.5), ("lcka", 5, 4, 50, 1.0), ("lcka", 20, 20, 100, 1.0),
            ("lcka_debiased", 10, 8, 60, 0.5), ("lcka_debiased", 5, 4, 50, 1.0), ("lcka_debiased", 20, 20, 100, 1.0)]


def coverage(measure: str, p: int, q: int, n: int, sigma: float, sets: int = 200, replicates: int = 200):
    rng = np.random.default_rng(123)
    W = rng.normal(size=(p, q)) / np.sqrt(p)
    pop = np.linalg.norm(W) ** 2 / (np.sqrt(p) * np.linalg.norm(W.T @ W + sigma**2 * np.eye(q)))
    hits, estimates = {m: 0 for m in U.METHODS}, []
    for k in range(sets):
        X = rng.normal(size=(n, p))
        Y = X @ W + sigma * rng.normal(size=(n, q))
        b = U.index_bootstrap([S.layer_stats(X)], [S.layer_stats(Y)], [measure], replicates=replicates, seed=k)[measure]
        estimates.append(float(b.estimate[0, 0]))
        for m in hits:
            lo, hi = b.interval(0.95, m)
            hits[m] += bool(lo[0, 0] <= pop <= hi[0, 0])
    return pop, float(np.mean(estimates)), {m: h / sets for m, h in hits.items()}


def main() -> None:
    threadpoolctl.threadpool_limits(1)
    print("| index, p × q, n, σ | population | mean estimate | percentile | bc | BCa |")
    print("|---|---|---|---|---|---|")
    for measure, p, q, n, sigma in SETTINGS:
        pop, mean, cov = coverage(measure, p, q, n, sigma)
        print(f"| {measure}, {p} × {q}, {n}, {sigma:g} | {pop:.3f} | {mean:.3f} | {cov['percentile']:.3f} | "
              f"{cov['bc']:.3f} | {cov['bca']:.3f} |", flush=True)


if __name__ == "__main__":
    main()

"""Benchmark: stitchlib's shared per-layer statistics vs a per-pair feature-space baseline.

Workload: every pair of L layers of network A × L layers of network B (default 8 × 8 = 64 pairs), n samples,
p columns per layer, CKA and OPD per pair.  Synthetic layers: float32 random projections of K shared latent
factors (each layer weights a sliding window of factors, so neighbouring layers are more alike) plus noise.

Baseline (how public reference code does it, float64): per pair centre both matrices, CKA = ‖XᵀY‖²_F /
(‖XᵀX‖_F ‖YᵀY‖_F) from p × p products, OPD = ‖X‖² + ‖Y‖² − 2‖YᵀX‖_* from an SVD of the p₁ × p₂ cross matrix.
It is timed on a subset of pairs and scaled to all pairs; above --baseline-max-p (p × p matrices too large or
too slow here) its per-pair time is extrapolated with the power law fitted to the two largest measured sizes.
The output says which.  stitchlib time = layer_stats for all 2L layers + pairwise for all L² pairs (data
generation excluded).  Peak memory of stitchlib = statistics held + the largest transient of one call
(tracemalloc on the CPU, torch.cuda.max_memory_allocated on CUDA), compared with one p × p float64 matrix.

    python bench/bench_similarity.py            # n = 2000, p = 512 … 65,536: ~14 min on 2 shared cores, 4 of them
                                                # the one baseline pair timed at p = 8192 (--baseline-max-p 1024
                                                # skips it and extrapolates: ~10 min)
    python bench/bench_similarity.py --quick    # smoke run, ~30 s
    python bench/bench_similarity.py --device cuda
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from stitchlib import similarity as S  # noqa: E402

LATENT = 32


def make_layer(net: int, layer: int, n: int, p: int, n_layers: int, seed: int, device: str):
    """float32 (n × p): (Z · w_layer) W + noise, Z shared by both networks; window of factors slides with depth."""
    rng = np.random.default_rng([seed, 0])
    Z = rng.standard_normal((n, LATENT), dtype=np.float32)
    centre = (LATENT - 1) * layer / max(1, n_layers - 1)
    w = np.exp(-0.5 * ((np.arange(LATENT) - centre) / 4.0) ** 2).astype(np.float32)
    rng = np.random.default_rng([seed, 1 + net, layer, p])
    X = (Z * w) @ rng.standard_normal((LATENT, p), dtype=np.float32)
    X += 0.5 * rng.standard_normal((n, p), dtype=np.float32)
    if device == "cpu":
        return X
    import torch

    return torch.from_numpy(X).to(device)


def baseline_pair(X, Y) -> tuple[float, float]:
    """Per-pair feature-space CKA and OPD (float64), as public reference implementations compute them."""
    if isinstance(X, np.ndarray):
        X, Y = X.astype(np.float64), Y.astype(np.float64)
    else:
        X, Y = X.double(), Y.double()
    X, Y = X - X.mean(0), Y - Y.mean(0)
    cka = fro(X.T @ Y) ** 2 / (fro(X.T @ X) * fro(Y.T @ Y))
    X, Y = X / fro(X), Y / fro(Y)
    opd = float((X**2).sum() + (Y**2).sum()) - 2 * nuclear(Y.T @ X)
    return cka, opd


def fro(m) -> float:
    return float((m**2).sum()) ** 0.5


def nuclear(m) -> float:
    if isinstance(m, np.ndarray):
        return float(np.linalg.norm(m, ord="nuc"))
    import torch

    return float(torch.linalg.matrix_norm(m, ord="nuc"))


class Meter:
    """Wall time and peak memory of one call (CPU: tracemalloc; CUDA: max_memory_allocated above the start)."""

    def __init__(self, device: str):
        self.device = device

    def __call__(self, fn, *args, **kw):
        cuda = self.device != "cpu"
        if cuda:
            import torch

            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            tracemalloc.start()
        t = time.perf_counter()
        out = fn(*args, **kw)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        if cuda:
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        return out, dt, peak


def nbytes(st: S.LayerStats) -> int:
    arrays = (st.mean, st.U, st.s, st.gram_diag, st.loadings)
    return sum(a.numel() * a.element_size() if hasattr(a, "numel") else a.nbytes for a in arrays if a is not None)


def run_size(p: int, args, meter: Meter, pairs_timed: int) -> dict:
    L, n = args.layers, args.n
    stats, held, peak, t_stats = {0: [], 1: []}, 0, 0, 0.0
    for net in (0, 1):
        for layer in range(L):
            X = make_layer(net, layer, n, p, L, args.seed, args.device)
            st, dt, pk = meter(S.layer_stats, X, name=f"{'AB'[net]}{layer}")
            stats[net].append(st)
            t_stats += dt
            peak = max(peak, held + pk)
            held += nbytes(st)
            del X
    res, t_pairs, pk = meter(S.pairwise, stats[0], stats[1], ["lcka", "opd"])
    peak = max(peak, held + pk)
    out = dict(p=p, t_stats=t_stats, t_pairs=t_pairs, ours=t_stats + t_pairs, peak=peak, ranks=stats[0][0].rank)
    if pairs_timed:
        order = [(i, i) for i in range(L)] + [(i, j) for i in range(L) for j in range(L) if i != j]
        chosen = order[:pairs_timed]
        t_base, d_cka, d_opd = 0.0, 0.0, 0.0
        for i, j in chosen:
            X = make_layer(0, i, n, p, L, args.seed, args.device)
            Y = make_layer(1, j, n, p, L, args.seed, args.device)
            (cka, o), dt, _ = meter(baseline_pair, X, Y)
            t_base += dt
            d_cka = max(d_cka, abs(cka - res["lcka"][i, j]))
            d_opd = max(d_opd, abs(o - res["opd"][i, j]))
            del X, Y
        out.update(base_per_pair=t_base / len(chosen), pairs_timed=len(chosen), d_cka=d_cka, d_opd=d_opd)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: n = 400, 4 × 4 layers, p ≤ 2048")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 8192, 65536])
    ap.add_argument("--baseline-max-p", type=int, default=8192, help="largest p at which the baseline runs")
    ap.add_argument("--baseline-pairs", type=int, default=None,
                    help="pairs timed per size (default: 64·(512/p)², between 1 and all)")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads (threadpoolctl; 0 = library default). Default 1: on a shared 2-core machine "
                         "multi-threaded OpenBLAS spins and runs 5-10x slower; both sides get the same setting")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (torch float64 on the GPU)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.n, args.layers, args.sizes, args.baseline_max_p = 400, 4, [128, 512, 2048], 2048
    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            sys.exit(f"--device {args.device}: torch.cuda is not available")
    if args.threads:
        import threadpoolctl

        threadpoolctl.threadpool_limits(args.threads)
    all_pairs = args.layers**2
    meter = Meter(args.device)
    print(f"# {args.layers}×{args.layers} layer pairs, n = {args.n}, CKA + OPD, device {args.device}, "
          f"{os.cpu_count()} CPUs, BLAS threads {args.threads or 'default'}, numpy {np.__version__}", flush=True)
    rows = []
    for p in args.sizes:
        k = 0
        if p <= args.baseline_max_p:
            k = args.baseline_pairs or int(min(all_pairs, max(1, round(64 * (512 / p) ** 2))))
        t0 = time.perf_counter()
        r = run_size(p, args, meter, min(k, all_pairs))
        rows.append(r)
        print(f"#   p = {p}: stats {r['t_stats']:.1f} s, pairs {r['t_pairs']:.1f} s, rank {r['ranks']}, "
              f"size done in {time.perf_counter() - t0:.0f} s", flush=True)
    measured = [r for r in rows if "base_per_pair" in r]
    slope = None
    if len(measured) >= 2:
        a, b = measured[-2], measured[-1]
        slope = math.log(b["base_per_pair"] / a["base_per_pair"]) / math.log(b["p"] / a["p"])
    print(f"\n{'p':>6} {'baseline s':>11}  {'baseline timing':<34} {'stitchlib s':>11} {'speed-up':>9} "
          f"{'max|ΔCKA|':>10} {'max|ΔOPD|':>10} {'stitchlib peak':>15} {'p×p×8 B':>10}")
    for r in rows:
        if "base_per_pair" in r:
            base, how = r["base_per_pair"] * all_pairs, f"{r['pairs_timed']}/{all_pairs} pairs timed, scaled"
            dc, do = f"{r['d_cka']:.1e}", f"{r['d_opd']:.1e}"
        elif slope is not None:
            last = measured[-1]
            base = last["base_per_pair"] * (r["p"] / last["p"]) ** slope * all_pairs
            how, dc, do = f"extrapolated ∝ p^{slope:.2f} from p={last['p']}", "n/a", "n/a"
        else:
            base, how, dc, do = float("nan"), "not run", "n/a", "n/a"
        print(f"{r['p']:>6} {base:>11.1f}  {how:<34} {r['ours']:>11.2f} {base / r['ours']:>8.1f}× {dc:>10} {do:>10} "
              f"{r['peak'] / 2**20:>12.0f} MB {r['p'] ** 2 * 8 / 2**20:>7.0f} MB")
    print(f"\n# process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB "
          "(includes the float32 input layers)")


if __name__ == "__main__":
    main()

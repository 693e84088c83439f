"""Benchmark: bootstrap replicates of CKA from the shared layer statistics vs recomputing the index per replicate.

Workload: 8 × 8 layer pairs of two synthetic networks (bench_similarity's layers: random projections of shared
latent factors plus noise), n test images, p columns per layer, linear CKA, B bootstrap resamples of the images.

  stitchlib: `stitchlib.uncertainty.index_bootstrap` on the 16 layers' statistics (`layer_stats`, computed once
             and timed separately): every replicate from the n × n Grams of the statistics, no refactorisation.
  baseline:  per replicate, gather the resampled rows of every layer and recompute the 64 CKA values with
             stitchlib.similarity (layer_stats + pairwise; itself much faster than per-pair feature-space code,
             see bench_similarity) — timed on a few replicates and scaled to B.
Both agree to rounding on the replicates the baseline computed (max |ΔCKA| printed).

    python bench/bench_uncertainty.py              # n = 1000, p = 1024, B = 1000 (≈ 1 min on one core)
    python bench/bench_uncertainty.py --quick      # n = 300, B = 200

With ``--activations`` it times instead what the indices job would spend on each index of a run's architecture
(every layer pair of every network pair, the config's reshapes): CPU seconds for ``--replicates`` replicates,
and per replicate — what decides ``uncertainty.indices``:

    python bench/bench_uncertainty.py --activations results/activations/digits --arch resnet18 --replicates 20
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_similarity import make_layer  # noqa: E402

from stitchlib import similarity as S  # noqa: E402
from stitchlib import uncertainty as U  # noqa: E402


def per_index(args) -> None:
    """CPU time of index_bootstrap per index over every layer pair of every network pair of one architecture."""
    import yaml

    from stitchlib import config

    cfg = config.validate(yaml.safe_load(open(args.config)))
    nets = [config.network_id(args.arch, s) for s in cfg["seeds"]]
    layers = config.layers(cfg, args.arch)
    print(f"# {args.arch}: {len(nets)} networks × {len(layers)} layers, every ordered network pair, "
          f"{args.replicates} replicates, BLAS threads {args.threads or 'default'}")
    for m in args.measures.split(","):
        rs = cfg["similarity"]["reshape"][m]
        stats = [S.layer_stats_h5(os.path.join(args.activations, net, "test.h5"), layer, reshape=rs,
                                  loadings=True if m == "pwcca" else None) for net in nets for layer in layers]
        t = time.process_time()
        U.index_bootstrap(stats, stats, [m], replicates=args.replicates, jackknife=False)
        dt = time.process_time() - t
        print(f"{m:14s} ({rs:8s}): {dt:7.2f} s CPU, {dt / args.replicates:.3f} s per replicate", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--p", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--baseline-replicates", type=int, default=2, help="replicates the baseline is timed on")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (threadpoolctl; 0 = library default)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--activations", help="a run's activations/<dataset> folder: time each index of --arch instead")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config.yaml"))
    ap.add_argument("--measures", default="lcka,lcka_debiased,opd,r2_lr,mean_cca,svcca,pwcca")
    args = ap.parse_args()
    if args.quick:
        args.n, args.replicates = 300, 200
    if args.threads:
        import threadpoolctl

        threadpoolctl.threadpool_limits(args.threads)
    if args.activations:
        return per_index(args)
    L, n, B = args.layers, args.n, args.replicates
    X = {(net, i): make_layer(net, i, n, args.p, L, 0, "cpu") for net in (0, 1) for i in range(L)}
    t = time.perf_counter()
    stats = {k: S.layer_stats(x) for k, x in X.items()}
    t_stats = time.perf_counter() - t
    t = time.perf_counter()
    boot = U.index_bootstrap([stats[0, i] for i in range(L)], [stats[1, j] for j in range(L)], ["lcka"],
                             replicates=B, jackknife=False)["lcka"]
    t_boot = time.perf_counter() - t

    counts = U.resample_counts(n, args.baseline_replicates)
    t, diff = time.perf_counter(), 0.0
    for b, c in enumerate(counts):
        idx = np.repeat(np.arange(n), c.astype(int))
        sa = [S.layer_stats(X[0, i][idx]) for i in range(L)]
        sb = [S.layer_stats(X[1, j][idx]) for j in range(L)]
        diff = max(diff, float(np.abs(S.pairwise(sa, sb, ["lcka"])["lcka"] - boot.replicates[b]).max()))
    t_base = (time.perf_counter() - t) / len(counts) * B
    print(f"# {L}×{L} layer pairs, n = {n}, p = {args.p}, B = {B} replicates of linear CKA, "
          f"BLAS threads {args.threads or 'default'}, {os.cpu_count()} CPUs")
    print(f"layer statistics (once, both sides):       {t_stats:8.2f} s")
    print(f"stitchlib bootstrap from the statistics:   {t_boot:8.2f} s")
    print(f"recompute per replicate ({len(counts)} timed, × {B / len(counts):g}): {t_base:8.1f} s")
    print(f"ratio: {t_base / t_boot:.0f}× faster (max |ΔCKA| on the timed replicates {diff:.1e})")


if __name__ == "__main__":
    main()

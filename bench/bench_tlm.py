"""TLM from cached source activations vs. a TLM that runs the frozen front half f≤i for every batch.

Same stitches, same batches, same seeds: the results must agree (max |ΔW| is printed) and only the
time differs. The cached variant pays one forward pass over the training split to fill the cache
(included in its time). Also compares training the stitches that share a receiving layer together
(one batched pass through g>j) with training them one by one, and a receiver whose BatchNorms are folded
into its convolutions (``models.fold_batchnorm``, what the workflow's TLM uses) with the unfolded one: those
two run alternately ``--reps`` times each in this process, so load from other processes hits both alike.

    python bench/bench_tlm.py [--width 16] [--epochs 2] [--device auto] [--reps 3]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from stitchlib import data, models, train
from stitchlib.stitching import AffineStitch, fit_dm, train_tlm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--target", default="layer3.0", help="receiving layer")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3, help="alternating runs of the folded / unfolded receiver")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = train.pick_device(args.device)

    tr, te = (data.load("digits", s, image_size=args.image_size) for s in ("train", "test"))
    torch.manual_seed(0)
    net = models.build("resnet18", num_classes=10, image_size=args.image_size, width=args.width)
    train.train_network(net, tr, te, dict(optimizer="adam", lr=1e-3, weight_decay=1e-5, epochs=3, batch_size=64),
                        seed=0, device=dev, progress=lambda s: None)
    net.eval()
    x, y = tr.tensors
    x = x.to(dev)
    j = net.layer_index(args.target)
    cfg = dict(optimizer="adam", lr=1e-3, weight_decay=1e-5, batch_size=256, epochs=args.epochs)
    quiet = dict(seed=0, progress=lambda s: None)
    sources = list(range(len(net.layer_names)))

    with torch.no_grad():
        tgt = net.front(x[:100], j)
        dm = {i: fit_dm(AffineStitch.between(net.front(x[:1], i).shape[1:], tgt.shape[1:], "conv"),
                        [net.front(x[:100], i).cpu()], [tgt.cpu()]).to(dev) for i in sources}

    def timed(fn):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t

    def run_front_every_batch():
        st = copy.deepcopy(dm)
        for i in sources:
            train_tlm({i: st[i]}, net, j, lambda k, idx: net.front(x[idx.to(dev)], k).detach(), y, cfg, **quiet)
        return st

    def run_cached(group: bool, receiver=net):
        st = copy.deepcopy(dm)
        with torch.no_grad():
            _, outs = net.forward_all(x)  # filling the cache: one pass over the training split
        cache = {i: outs[i] for i in sources}
        groups = [sources] if group else [[i] for i in sources]
        for g in groups:
            train_tlm({i: st[i] for i in g}, receiver, j, lambda k, idx: cache[k][idx.to(dev)], y, cfg, **quiet)
        return st

    base, t_base = timed(run_front_every_batch)
    cached, t_cached = timed(lambda: run_cached(False))
    grouped, t_grouped = timed(lambda: run_cached(True))
    folded_net, t_unfolded, t_folded = models.fold_batchnorm(net), 0.0, 0.0
    for _ in range(args.reps):
        t_unfolded += timed(lambda: run_cached(False))[1]
        folded, t = timed(lambda: run_cached(False, folded_net))
        t_folded += t

    def maxdiff(a):
        return max((a[i].weight - base[i].weight).abs().max().item() for i in sources)

    print(f"device {dev}, ResNet-18 width {args.width} at {args.image_size}px, {len(sources)} stitches into "
          f"{args.target}, {args.epochs} epochs on {len(y)} digits")
    print(f"{'variant':<44}{'seconds':>9}{'speed-up':>10}{'max |ΔW| vs baseline':>22}")
    print(f"{'front half f≤i run for every batch (baseline)':<44}{t_base:>9.2f}{1.0:>10.2f}{0.0:>22.2e}")
    print(f"{'cached source activations':<44}{t_cached:>9.2f}{t_base / t_cached:>10.2f}{maxdiff(cached):>22.2e}")
    print(f"{'cached + stitches into one layer together':<44}{t_grouped:>9.2f}{t_base / t_grouped:>10.2f}"
          f"{maxdiff(grouped):>22.2e}")
    print(f"\ncached, one by one, {args.reps} alternating runs each: unfolded receiver {t_unfolded:.2f} s, BatchNorm "
          f"folded {t_folded:.2f} s: folded {t_unfolded / t_folded:.2f}× faster, max |ΔW| vs baseline "
          f"{maxdiff(folded):.2e}")


if __name__ == "__main__":
    main()

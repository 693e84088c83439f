"""Paper scale (issue 16): the batch order shared by cached and recomputed fronts, the chunked reader's bounded
memory, streamed evaluation equal to one pass, cached vs recomputed TLM, the training split's summary, the cache
policy and the footprint estimates."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_reliability import TINY

from stitchlib import catalog, footprint, io, models, pipeline
from stitchlib import config as sconf
from stitchlib.stitching import evaluate

ROOT = TINY.parents[2]


# ----------------------------------------------------------------------------- the batch order


def test_epoch_order_is_todays_permutation_when_the_split_fits_the_buffer_and_chunked_otherwise():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(io.epoch_order(1400, 256, 2048, g1), torch.randperm(1400, generator=g2))
    n, chunk, buffer = 1000, 64, 256
    a = io.epoch_order(n, chunk, buffer, torch.Generator().manual_seed(0))
    b = io.epoch_order(n, chunk, buffer, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(n))  # a permutation, a function of the seed
    assert not torch.equal(a, io.epoch_order(n, chunk, 512, torch.Generator().manual_seed(0)))
    pos, windows = 0, 0
    while pos < n:  # the order is consecutive windows, each the samples of buffer / chunk whole chunks
        end = pos + 1
        while True:
            chunks = set((a[pos:end] // chunk).tolist())
            if sum(min(chunk, n - c * chunk) for c in chunks) == end - pos and (len(chunks) == buffer // chunk
                                                                                or end == n):
                break
            end += 1
        pos, windows = end, windows + 1
    assert windows == -(-n // buffer)


def test_chunked_reader_reads_each_chunk_once_per_epoch_and_holds_two_buffers(tmp_path):
    n, chunk, buffer, bs = 1000, 50, 200, 64
    x = np.random.default_rng(0).standard_normal((n, 3, 2, 2)).astype(np.float32)
    path = tmp_path / "a.h5"
    with io.ActivationWriter(path, n, {}, chunk=chunk) as w:
        w.append(np.arange(n), np.zeros((n, 2), np.float32), {"a": x}, {"a": "conv"})
    reader = io.ChunkedLayer(path, "a", chunk, 2 * buffer // chunk)
    reads, held, get = [], [], reader._get

    def counting(c):
        if c not in reader._chunks:
            reads.append(c)
        return get(c)

    reader._get = counting
    order = io.epoch_order(n, chunk, buffer, torch.Generator().manual_seed(1))
    for s in range(0, n, bs):
        idx = order[s:s + bs].sort().values.numpy()
        assert np.array_equal(reader[idx], x[idx])
        held.append(len(reader._chunks))
    assert sorted(reads) == list(range(n // chunk))  # every chunk read exactly once this epoch
    assert max(held) <= 2 * buffer // chunk


# ----------------------------------------------------------------------------- a tiny trained pair on disk


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two tiny ResNet-18s trained 1 epoch on the digits, their checkpoints and cached activations."""
    tmp = tmp_path_factory.mktemp("pair")
    raw = yaml.safe_load(TINY.read_text())
    raw["architectures"]["rn"]["layers"] = ["layer2.1", "layer3.1"]
    cfg = sconf.validate(raw)
    out = {"cfg": cfg}
    for net in ("rn-s0", "rn-s1"):
        spec = sconf.network_spec(cfg, "digits", net)
        torch.manual_seed(spec["seed"])
        model = pipeline.build_network(spec)
        from stitchlib.train import train_network

        train_network(model, pipeline.load_split(spec, "train"), pipeline.load_split(spec, "test"),
                      {"optimizer": "adam", "lr": 3e-3, "epochs": 1, "batch_size": 64}, seed=spec["seed"],
                      device=torch.device("cpu"), progress=lambda s: None)
        io.save_state_dict(tmp / f"{net}.pt", model.state_dict())
        files = {s: str(tmp / f"{net}-{s}.h5") for s in ("train", "test")}
        pipeline.extract(spec, str(tmp / f"{net}.pt"), files, chunk=128, device="cpu")
        out[net] = {"spec": spec, "ckpt": str(tmp / f"{net}.pt"), **files}
    s, t = out["rn-s0"], out["rn-s1"]
    out["inputs"] = {"src_train": s["train"], "src_test": s["test"], "tgt_train": t["train"], "tgt_test": t["test"],
                     "src_ckpt": s["ckpt"], "tgt_ckpt": t["ckpt"]}
    out["dir"] = tmp
    pipeline.dm_pair(s["spec"], t["spec"], out["inputs"], cfg["dm"], str(tmp / "dm.pt"), str(tmp / "dm.csv"),
                     device="cpu")
    return out


def _fronts(policy, buffer=512, chunk=128, block_mb=256):
    return {"policy": policy, "chunk": chunk, "buffer": buffer, "block_mb": block_mb}


def _stitches(path):
    return {k: v["weight"] for k, v in io.load_state_dict(path).items()}


def test_cached_and_recomputed_tlm_train_the_same_stitches(pair):
    s, t, tmp = pair["rn-s0"], pair["rn-s1"], pair["dir"]
    settings = {**pair["cfg"]["tlm"], "epochs": 1, "group_size": 2}
    inputs = {**pair["inputs"], "dm": str(tmp / "dm.pt")}
    for policy in ("cache", "recompute"):  # 1,400 images, buffer 512 of chunks of 128: the windowed order
        pipeline.tlm_pair(s["spec"], t["spec"], inputs, settings, str(tmp / f"tlm-{policy}.pt"),
                          str(tmp / f"tlm-{policy}.csv"), device="cpu", fronts=_fronts(policy))
    cached, recomputed, dm = (_stitches(tmp / f) for f in ("tlm-cache.pt", "tlm-recompute.pt", "dm.pt"))
    moved = max(float((cached[k] - dm[k]).abs().max()) for k in dm)
    gap = max(float((cached[k] - recomputed[k]).abs().max()) for k in dm)
    assert moved > 1e-3 and gap < 1e-4 * max(1.0, moved)  # trained, and the same stitches (fronts BN-folded: ~1e-6)
    a, b = (pd.read_csv(tmp / f"tlm-{p}.csv") for p in ("cache", "recompute"))
    assert (a.accuracy - b.accuracy).abs().max() <= 2 / 397


def test_recomputed_tlm_with_augmentation_is_seeded_and_differs_from_the_plain_one(pair):
    s, t, tmp = pair["rn-s0"], pair["rn-s1"], pair["dir"]
    settings = {**pair["cfg"]["tlm"], "epochs": 1, "group_size": 2, "augment": "flip_crop"}
    inputs = {**pair["inputs"], "dm": str(tmp / "dm.pt")}
    for run in (0, 1):
        pipeline.tlm_pair(s["spec"], t["spec"], inputs, settings, str(tmp / f"aug{run}.pt"), str(tmp / f"aug{run}.csv"),
                          device="cpu", fronts=_fronts("recompute"))
    a, b = _stitches(tmp / "aug0.pt"), _stitches(tmp / "aug1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    if (tmp / "tlm-recompute.pt").exists():
        plain = _stitches(tmp / "tlm-recompute.pt")
        assert max(float((plain[k] - a[k]).abs().max()) for k in a) > 1e-4
    with pytest.raises(ValueError, match="needs recomputed fronts"):
        pipeline.tlm_pair(s["spec"], t["spec"], inputs, settings, str(tmp / "x.pt"), str(tmp / "x.csv"),
                          device="cpu", fronts=_fronts("cache"))


def test_streamed_evaluation_equals_one_pass_at_any_block_size(pair):
    s, t, tmp = pair["rn-s0"], pair["rn-s1"], pair["dir"]
    stitches = pipeline._load_stitches(str(tmp / "dm.pt"), s["spec"], t["spec"], s["test"], t["test"])
    receiver = models.fold_batchnorm(pipeline.load_network(t["spec"], t["ckpt"], torch.device("cpu")))
    small, small_images = pipeline.evaluate_pair(stitches, s["spec"], t["spec"], receiver, s["test"], t["test"], "dm",
                                                 block_mb=1)
    whole, whole_images = pipeline.evaluate_pair(stitches, s["spec"], t["spec"], receiver, s["test"], t["test"], "dm",
                                                 block_mb=999)
    assert pipeline._block([(s["test"], s["spec"]["layers"])], 1) == 256 < 397  # two blocks
    pd.testing.assert_frame_equal(small, whole, check_exact=True)
    for k in pipeline.PER_IMAGE:  # the bootstrap's per-image terms too
        np.testing.assert_array_equal(small_images[k], whole_images[k])
    y = torch.as_tensor(io.read_array(t["test"], "labels"))
    one = evaluate(stitches["layer2.1->layer3.1"], receiver, receiver.layer_index("layer3.1"),
                   torch.as_tensor(io.read_layer(s["test"], "layer2.1")),
                   torch.as_tensor(io.read_layer(t["test"], "layer3.1")), y)
    row = small[(small.source_layer == "layer2.1") & (small.target_layer == "layer3.1")].iloc[0]
    assert (row.accuracy, row.struct) == (one["accuracy"], one["struct"])


def test_index_bootstrap_in_groups_of_any_size_gives_the_same_replicates(pair, tmp_path):
    """At paper scale the indices job bootstraps per network pair or per layer pair (footprint.bootstrap_groups),
    so that its memory stays bounded; the replicates are those of one group holding every layer."""
    s, t = pair["rn-s0"], pair["rn-s1"]
    specs, h5 = {"rn-s0": s["spec"], "rn-s1": t["spec"]}, {"rn-s0": s["test"], "rn-s1": t["test"]}
    pairs = [("rn-s0", "rn-s0"), ("rn-s0", "rn-s1"), ("rn-s1", "rn-s1")]
    settings = {**pair["cfg"]["similarity"], "measures": ["lcka", "lcka_debiased", "opd"]}
    u = {**pair["cfg"]["uncertainty"], "enabled": True, "replicates": 50, "indices": ["lcka", "lcka_debiased"]}
    nbytes = {(n, x): footprint.bootstrap_layer_bytes(*pipeline.layer_shapes(h5[n])[x], 397, "flatten", False)
              for n in specs for x in specs[n]["layers"]}
    layers = {n: specs[n]["layers"] for n in specs}
    two = 2 * max(nbytes.values())
    assert [len(footprint.bootstrap_groups(pairs, layers, nbytes, b)) for b in (2 ** 40, two)] == [1, 12]
    one_net = sum(v for (n, _), v in nbytes.items() if n == "rn-s0")  # per network pair: s0 with s0, s1 with s1
    assert len(footprint.bootstrap_groups(pairs[:1] + pairs[2:], layers, nbytes, one_net)) == 2
    reps = {}
    for budget in (2 ** 40, two):  # every layer at once; per layer pair
        out = tmp_path / f"{budget}.csv"
        pipeline.similarity_indices(specs, h5, pairs, settings, str(out), u, str(out.with_suffix(".npz")),
                                    bootstrap_budget=budget)
        reps[budget] = io.read_npz(out.with_suffix(".npz"))["replicates"]
    first = reps[2 ** 40]
    rows = pd.read_csv(tmp_path / f"{2 ** 40}.csv").measure.isin(["LCKA", "LCKA (debiased)"]).to_numpy()
    assert np.isfinite(first[rows]).all() and np.isnan(first[~rows]).all()
    for r in reps.values():
        np.testing.assert_allclose(r, first, rtol=1e-5, atol=1e-6)  # float32 rows; BLAS order may differ


def test_the_training_summary_is_what_probes_and_the_sensitivity_test_read(pair, tmp_path):
    from stitchlib import ding

    s = pair["rn-s0"]
    files = {"train": str(tmp_path / "train.h5"), "test": str(tmp_path / "test.h5")}
    pipeline.extract(s["spec"], s["ckpt"], files, chunk=128, device="cpu", fronts=False,
                     test={"samples": 100, "seed": 0})
    with h5py.File(files["train"]) as f:
        assert f.attrs["fronts"] == "summary" and len(f["layers"]) == 0 and f["pooled/layer3.1"].shape == (1400, 16)
    pipeline.check_activations(s["spec"], files["train"])  # checked by its pooled features
    full = io.read_layer(s["train"], "layer3.1")
    assert np.array_equal(io.read_array(files["train"], "pooled/layer3.1"), ding.pooled(full, "conv"))
    lr = ding.LowRank.fit([full], "conv")
    assert np.allclose(io.read_array(files["train"], "lowrank/layer3.1/variances"), lr.variances, rtol=1e-9)
    with pytest.raises(KeyError, match="holds only its summary"):
        pipeline.CachedFronts(files["train"]).batch(["layer3.1"], torch.arange(4))
    # the test subset: 100 seeded images in that random order, the same activations as the full cache's
    index = io.read_array(files["test"], "index")
    assert len(index) == 100 and list(index) != sorted(index)
    assert np.array_equal(io.read_layer(files["test"], "layer2.1"), io.read_layer(s["test"], "layer2.1")[index])
    # DM's K images recomputed equal the cached ones (the front BN-folded: up to float rounding)
    spec = s["spec"]
    rec = pipeline.train_fronts(spec, "recompute", {"ckpt": s["ckpt"]}, torch.device("cpu"))
    ids = pipeline.dm_sample_index(1400, 100, 0)
    assert np.allclose(rec.rows(["layer3.1"], ids)["layer3.1"], full[ids], atol=1e-5)


def test_detector_streams_the_cache_or_recomputes_and_scores_from_its_energies(pair, tmp_path):
    t = pair["rn-s1"]
    cfg = pair["cfg"]
    o = cfg["ood"]["outliers"]
    outl = {x: str(tmp_path / f"{x}.h5") for x in ("outliers", "heldout")}
    pipeline.extract(t["spec"], t["ckpt"], outl, chunk=128, device="cpu", outliers=o)
    settings = {k: v for k, v in cfg["ood"].items() if k not in ("enabled", "outliers")}
    for policy in ("cache", "recompute"):
        inputs = {"train": t["train"], "test": t["test"], **(outl if policy == "cache" else {"ckpt": t["ckpt"]})}
        out = {x: str(tmp_path / f"{policy}.{x}") for x in ("pt", "json", "npz")}
        pipeline.train_detector(t["spec"], "layer3.1", inputs, settings, out["pt"], out["json"], device="cpu",
                                out_npz=out["npz"], fronts=_fronts(policy, buffer=256), outliers=o)
    a, b = (np.load(tmp_path / f"{p}.npz") for p in ("cache", "recompute"))
    assert np.allclose(a["test"], b["test"], atol=1e-3) and np.allclose(a["heldout"], b["heldout"], atol=1e-3)
    det = pipeline.load_detector(str(tmp_path / "cache.pt"), str(tmp_path / "cache.json"), torch.device("cpu"))
    from stitchlib import ood

    assert np.array_equal(ood.energy(det, io.read_layer(t["test"], "layer3.1")), a["test"])  # what scoring compares


# ----------------------------------------------------------------------------- policy and footprint


def _paper(name):
    raw = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    for d in raw["datasets"].values():
        d["root"] = None
    raw["datasets"] = {k: {**v, "download": True} for k, v in raw["datasets"].items()}  # no data needed to plan
    if raw.get("ood", {}).get("outliers", {}).get("source") == "npy":
        raw["ood"]["outliers"]["source"] = "sample_photos"
    return sconf.validate(raw)


def test_auto_caches_the_digits_and_recomputes_paper_scale_or_on_cuda():
    default = sconf.load(ROOT / "config.yaml")
    assert {sconf.front_policy(default, c) for c in sconf.CONSUMERS} == {"cache"}
    paper = _paper("paper1-cifar10")
    assert sconf.train_cache_bytes(paper, "resnet18", "cifar10") == 50000 * 245760 * 4  # 0.98 MB/image
    assert {sconf.front_policy(paper, c) for c in ("dm", "tlm", "detector")} == {"recompute"}
    assert not sconf.caches_train_fronts(paper, "resnet18")
    cuda = sconf.validate({**yaml.safe_load((ROOT / "config.yaml").read_text()), "device": "cuda"})
    assert sconf.front_policy(cuda, "tlm") == "recompute"
    mixed = sconf.validate({**yaml.safe_load((ROOT / "config.yaml").read_text()),
                            "cache": {"consumers": {"detector": "recompute"}}})
    assert sconf.front_policy(mixed, "detector") == "recompute" and sconf.caches_train_fronts(mixed, "resnet18")


def test_layer_shapes_and_parameter_counts_without_torch_match_the_networks():
    cases = [("resnet18", {"width": 16}, 16), ("resnet", {"width": 4, "stage_blocks": [2, 1, 2, 1]}, 15),
             ("tiny10", {"width": 8}, 13), ("vit", {"patch_size": 4, "depth": 2, "heads": 2, "hidden_dim": 16,
                                                   "mlp_dim": 32}, 16), ("googlenet", {}, 17)]
    for family, params, size in cases:
        net = models.build(family, num_classes=10, image_size=size, **params).eval()
        with torch.no_grad():
            _, outs = net.forward_all(torch.zeros(1, 3, size, size))
        shapes = catalog.layer_shapes(family, params, size)
        assert list(shapes) == net.layer_names
        assert [s for s, _ in shapes.values()] == [tuple(o.shape[1:]) for o in outs], family
        assert {lay for _, lay in shapes.values()} == {net.layout}
        assert catalog.param_count(family, params, 10, size) == sum(p.numel() for p in net.parameters()), family


def test_footprint_of_paper1_cifar10_fits_the_targets_and_resources_follow_it():
    paper = _paper("paper1-cifar10")
    rules = footprint.estimate(paper)
    assert rules["dm"].jobs == rules["tlm"].jobs == 200 and rules["detector"].jobs == 200
    assert "outliers" not in rules  # detectors recompute their outliers' fronts
    total = sum(r.disk for r in rules.values())
    assert 100e9 < total < 250e9  # was 1.9 TB with every split of every network cached
    assert max(r.mem for r in rules.values()) < 16e9
    res = footprint.resources(paper)
    assert all(res[k]["mem_mb"] * 2 ** 20 >= rules[k].mem for k in rules)
    cached = sconf.validate({**paper, "cache": {**paper["cache"], "train": "cache"}, "tlm": {**paper["tlm"],
                                                                                         "augment": "none"}})
    assert sum(r.disk for r in footprint.estimate(cached).values()) > 1.5e12  # today's layout: every split cached
    text, flagged = footprint.report(paper, requested={"tlm": 1000})
    assert flagged == ["tlm"] and "EXCEEDS the 1000 MB requested" in text
    # The table jobs hold the long table's bootstrap replicates: 10 × 10 network pairs of ResNet-18 (8 stitch
    # points) and of ViT (12), TLM + DM's two rows + 7 indices per layer pair, × 1,000 replicates of float32.
    pairs = list(dict.fromkeys(p for s in paper["stitching"]["settings"] for p in sconf.network_pairs(paper, s)))
    rows = footprint._long_rows(paper, pairs)
    assert rows == 100 * (8 * 8 + 12 * 12) * (3 + 7)
    assert rules["table1"].mem >= 2 * rows * 1000 * 4 and rules["similarity_table"].disk >= rows * 1000 * 4
    off = footprint.estimate(sconf.validate({**paper, "uncertainty": {**paper["uncertainty"], "enabled": False}}))
    assert off["table1"].mem < 1e9 and off["indices"].mem < rules["indices"].mem

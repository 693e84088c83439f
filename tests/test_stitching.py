import numpy as np
import pytest
import torch

from stitchlib import stitching as st


def _planted(rng, n, c_in, c_out, layout):
    w, b = rng.normal(size=(c_out, c_in)), rng.normal(size=c_out)
    if layout == "conv":
        x = rng.normal(size=(n, c_in, 3, 3))
        y = np.einsum("oc,nchw->nohw", w, x) + b[None, :, None, None]
    else:
        x = rng.normal(size=(n, 5, c_in))
        y = x @ w.T + b
    return x.astype(np.float32), y.astype(np.float32), w, b


@pytest.mark.parametrize("layout", ["conv", "tokens"])
def test_planted_affine_map_is_recovered(rng, layout):
    x, y, w, b = _planted(rng, 200, 6, 4, layout)
    stitch = st.AffineStitch.between(x.shape[1:], y.shape[1:], layout)
    chunks = range(0, 200, 37)  # streamed in uneven chunks: the exact normal equations, not an average
    st.fit_dm(stitch, (x[i:i + 37] for i in chunks), (y[i:i + 37] for i in chunks))
    np.testing.assert_allclose(stitch.weight.detach().numpy(), w, atol=1e-4)
    np.testing.assert_allclose(stitch.bias.detach().numpy(), b, atol=1e-4)


def test_least_squares_matches_textbook_lstsq(rng):
    x, y = rng.normal(size=(300, 7)) * [1, 2, 3, 4, 5, 6, 100], rng.normal(size=(300, 3))
    ls = st.LeastSquares(7, 3)
    for i in range(0, 300, 64):
        ls.update(x[i:i + 64], y[i:i + 64])
    w, b = ls.solve()
    coef, *_ = np.linalg.lstsq(np.hstack([x, np.ones((300, 1))]), y, rcond=None)
    np.testing.assert_allclose(w, coef[:7].T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b, coef[7], rtol=1e-9, atol=1e-12)


def test_underdetermined_fit_gives_minimum_norm_solution(rng):
    """K < unknowns: the pseudo-inverse (minimum-norm) solution, finite and exact on the data."""
    x, y = rng.normal(size=(10, 30)), rng.normal(size=(10, 2))
    ls = st.LeastSquares(30, 2)
    ls.update(x, y)
    w, b = ls.solve()
    np.testing.assert_allclose(x @ w.T + b, y, atol=1e-8)
    xc = x - x.mean(0)
    np.testing.assert_allclose(w.T, np.linalg.pinv(xc) @ (y - y.mean(0)), atol=1e-8)


def test_dm_self_stitch_is_identity_and_keeps_accuracy(trained_resnet, digits16):
    """DM from a layer to itself: W = I, b = 0 on the live channels, and the original accuracy exactly."""
    net = trained_resnet
    (xtr, _), (xte, yte) = digits16[0].tensors, digits16[1].tensors
    with torch.no_grad():
        base = net(xte).argmax(1)
        for i in (0, 3, 7):
            h = net.front(xtr[:100], i)
            stitch = st.fit_dm(st.AffineStitch.between(h.shape[1:], h.shape[1:], "conv"), [h], [h])
            live = st.rows(h, "conv").std(0) > 0
            w = stitch.weight.numpy()
            np.testing.assert_allclose(w[np.ix_(live.numpy(), live.numpy())], np.eye(int(live.sum())), atol=1e-4)
            np.testing.assert_allclose(stitch.bias.numpy()[live.numpy()], 0, atol=1e-4)
            ht = net.front(xte, i)
            r = st.evaluate(stitch, net, i, ht, ht, yte)
            assert r["accuracy"] == (base == yte).sum().item() / len(yte)
            assert r["struct"] < 1e-8


def test_make_stitch_default_is_paper1s_stitch():
    """Paper 1's matrices go through the factory: conv maps and tokens get the same AffineStitch as before."""
    shapes = [((8, 2, 2), (4, 8, 8), "conv"), ((8, 8, 8), (4, 2, 2), "conv"), ((5, 8), (5, 3), "tokens")]
    for src, tgt, layout in shapes:
        s, ref = st.make_stitch(src, tgt, layout, layout), st.AffineStitch.between(src, tgt, layout)
        assert type(s) is st.AffineStitch and s.size == ref.size and s.weight.shape == ref.weight.shape
    with pytest.raises(ValueError, match="conv_stitch"):
        st.make_stitch((8, 2, 2), (4, 8, 8), "conv", "conv", "nearest")


def test_resize_stitch_maps_to_target_shape():
    s = st.AffineStitch.between((8, 2, 2), (4, 8, 8), "conv")
    assert tuple(s(torch.rand(3, 8, 2, 2)).shape) == (3, 4, 8, 8)
    with pytest.raises(ValueError, match="equal token counts"):
        st.AffineStitch.between((17, 8), (5, 8), "tokens")


def _tlm_setup(net, digits16, sources=(1, 4)):
    (xtr, ytr) = digits16[0].tensors
    x, y = xtr[:300], ytr[:300]
    with torch.no_grad():
        cache = {i: net.front(x, i) for i in sources}
        tgt = net.front(x, 5)
    stitches = {i: st.fit_dm(st.AffineStitch.between(cache[i].shape[1:], tgt.shape[1:], "conv"),
                             [cache[i][:100]], [tgt[:100]]) for i in sources}
    return x, y, cache, stitches


CFG = dict(optimizer="adam", lr=1e-3, weight_decay=1e-5, batch_size=64, epochs=2)


def _copy(stitches):
    out = {}
    for k, s in stitches.items():
        out[k] = st.AffineStitch(s.weight.shape[1], s.weight.shape[0], s.layout, s.size)
        out[k].set_affine(s.weight.detach(), s.bias.detach())
    return out


def test_tlm_grouped_equals_separate_and_cached_equals_on_the_fly(trained_resnet, digits16):
    net = trained_resnet
    x, y, cache, dm = _tlm_setup(net, digits16)
    grouped = _copy(dm)
    st.train_tlm(grouped, net, 5, lambda k, idx: cache[k][idx], y, CFG, seed=3, progress=lambda s: None)
    for k in dm:
        alone = _copy({k: dm[k]})
        st.train_tlm(alone, net, 5, lambda k_, idx: cache[k_][idx], y, CFG, seed=3, progress=lambda s: None)
        torch.testing.assert_close(alone[k].weight, grouped[k].weight, rtol=0, atol=1e-5)
        fly = _copy({k: dm[k]})
        st.train_tlm(fly, net, 5, lambda k_, idx: net.front(x[idx], k_).detach(), y, CFG, seed=3,
                     progress=lambda s: None)
        torch.testing.assert_close(fly[k].weight, alone[k].weight, rtol=0, atol=1e-5)
        assert not torch.equal(fly[k].weight, dm[k].weight)  # it trained


def test_tlm_trains_only_the_stitch_and_lowers_the_loss(trained_resnet, digits16):
    net = trained_resnet
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y, cache, dm = _tlm_setup(net, digits16, sources=(0,))
    curve = st.train_tlm(dm, net, 5, lambda k, idx: cache[k][idx], y, {**CFG, "epochs": 4}, seed=0,
                         progress=lambda s: None)
    assert curve[-1] < curve[0]
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # receiver frozen, BatchNorm statistics included


def test_tlm_soft_labels_use_receiver_outputs(trained_resnet, digits16):
    net = trained_resnet
    x, y, cache, dm = _tlm_setup(net, digits16, sources=(2,))
    with torch.no_grad():
        soft = net(x)
    cfg = {**CFG, "labels": "soft", "temperature": 2.0}
    curve = st.train_tlm(dm, net, 5, lambda k, idx: cache[k][idx], y, cfg, seed=0, soft_targets=soft,
                         progress=lambda s: None)
    assert np.isfinite(curve).all() and curve[-1] <= curve[0]
    with pytest.raises(ValueError, match="soft"):
        st.train_tlm(dm, net, 5, lambda k, idx: cache[k][idx], y, cfg, seed=0, progress=lambda s: None)


def test_dm_sample_index_is_seeded_sorted_and_checked():
    from stitchlib.pipeline import dm_sample_index

    a = dm_sample_index(1400, 100, 0)
    assert len(a) == 100 and (np.diff(a) > 0).all() and np.array_equal(a, dm_sample_index(1400, 100, 0))
    assert not np.array_equal(a, dm_sample_index(1400, 100, 1))
    assert np.array_equal(dm_sample_index(7, "all", 0), np.arange(7))
    with pytest.raises(ValueError, match="dm.samples"):
        dm_sample_index(50, 100, 0)


def test_upsampling_stitch_maps_then_resizes_the_same_function(rng):
    """conv1x1 ∘ resize == resize ∘ conv1x1 for bilinear resizing (weights sum to 1): the cheap order is exact."""
    s = st.AffineStitch.between((12, 2, 2), (5, 8, 8), "conv")
    s.set_affine(rng.normal(size=(5, 12)), rng.normal(size=5))
    h = torch.as_tensor(rng.normal(size=(4, 12, 2, 2)), dtype=torch.float64)
    s = s.double()
    reference = torch.nn.functional.conv2d(st.resize(h, (8, 8)), s.weight[:, :, None, None], s.bias)
    torch.testing.assert_close(s(h), reference, rtol=1e-12, atol=1e-12)

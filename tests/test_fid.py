"""FID: the Frechet distance against independent computations and closed forms, streaming
statistics against numpy, and pytorch-fid's InceptionV3 layout and loading with seeded random
weights (no pretrained file here)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqkit.evaluation.fid import (FID_WEIGHTS_FILE, FeatureStats, FIDInceptionV3, fid_from_features,
                                  frechet_distance, load_inception)

linalg = pytest.importorskip("scipy.linalg")   # not a core dependency of vqkit

# torchvision's documented Inception_V3_Weights num_params (27,161,264) less AuxLogits (conv0 1x1
# 768->128 + bn, conv1 5x5 128->768 + bn, fc 768->1000: 3,326,696) and fc (2048->1000: 2,049,000).
CONV_BN_PARAMS = 27_161_264 - 3_326_696 - 2_049_000   # 21,785,568

STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
A = ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
     "branch_pool"]
B = ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
C = ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3"] + \
    [f"branch7x7dbl_{i}" for i in range(1, 6)] + ["branch_pool"]
D = ["branch3x3_1", "branch3x3_2"] + [f"branch7x7x3_{i}" for i in range(1, 5)]
E = ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
     "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
BLOCKS = {"Mixed_5b": A, "Mixed_5c": A, "Mixed_5d": A, "Mixed_6a": B, "Mixed_6b": C, "Mixed_6c": C,
          "Mixed_6d": C, "Mixed_6e": C, "Mixed_7a": D, "Mixed_7b": E, "Mixed_7c": E}
CONVS = STEM + [f"{blk}.{br}" for blk, branches in BLOCKS.items() for br in branches]
# pytorch-fid's pt_inception-2015-12-05 keys (without its fc): BasicConv2d = conv (no bias) + bn.
PYTORCH_FID_KEYS = {f"{c}.{p}" for c in CONVS for p in
                    ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")}


class Payload:   # a pickled custom class: what weights_only must refuse
    def __reduce__(self):
        return (print, ("this must never run",))


pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py


@pytest.fixture(scope="module")
def net() -> FIDInceptionV3:
    return load_inception(None, allow_random=True, seed=0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 64, 64, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def feats(net, images) -> torch.Tensor:
    with torch.no_grad():
        return net(images)


def gaussian_stats(rng, d, n, shift=0.0, scale=1.0):
    mix = rng.normal(size=(d, d)) * scale / np.sqrt(d)
    x = rng.normal(size=(n, d)) @ mix + rng.normal(size=d) + shift
    return x.mean(0), np.cov(x, rowvar=False)


# --- Frechet distance --------------------------------------------------------------------------

def test_frechet_matches_independent_computations():
    rng = np.random.default_rng(0)
    m1, s1 = gaussian_stats(rng, 16, 500)
    m2, s2 = gaussian_stats(rng, 16, 500, shift=0.3, scale=2.0)
    got = frechet_distance(m1, s1, m2, s2)
    # Directly with scipy: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)).
    direct = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    # Symmetric form, eigendecompositions only: Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2).
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(w)) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    sym = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert got > 1.0
    assert got == pytest.approx(direct, rel=1e-6)
    assert got == pytest.approx(sym, rel=1e-6)
    assert frechet_distance(m2, s2, m1, s1) == pytest.approx(got, rel=1e-9)


def test_frechet_zero_for_identical_and_grows_with_mean_shift():
    rng = np.random.default_rng(1)
    m, s = gaussian_stats(rng, 16, 500)
    assert abs(frechet_distance(m, s, m, s)) < 1e-6
    direction = rng.normal(size=16)
    direction /= np.linalg.norm(direction)
    dists = [frechet_distance(m, s, m + t * direction, s) for t in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(dists, dists[1:]))
    # Equal covariances: only the mean term remains, FID = t^2.
    assert dists[1:] == pytest.approx([0.25, 1.0, 4.0, 16.0], abs=1e-6)


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=32), rng.normal(size=32)
    v1, v2 = rng.uniform(0.1, 3.0, 32), rng.uniform(0.1, 3.0, 32)
    expected = np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_rejects_large_imaginary_parts_and_bad_shapes():
    # S1 S2 = diag(-1, 1): its square root is diag(i, 1), not a real matrix.
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


def test_frechet_singular_product_falls_back_to_offset():
    # S1 S2 = [[0, 1], [0, 0]] has no square root (scipy returns inf): eps is added to the diagonals.
    s2 = np.array([[0.0, 1.0], [0.0, 0.0]])
    with pytest.warns(RuntimeWarning, match="singular"):
        d = frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), s2, eps=1e-6)
    assert np.isfinite(d)


def test_fid_from_features_matches_numpy_stats():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(200, 8)) * 1.5 + 0.2
    expected = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fid_from_features(torch.from_numpy(a).float(), b) == pytest.approx(expected, rel=1e-5)


# --- streaming statistics ----------------------------------------------------------------------

@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_feature_stats_streaming_equals_numpy(offset):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, 24)) @ rng.normal(size=(24, 24)) + offset
    st = FeatureStats()
    for lo, hi in [(0, 7), (7, 7), (7, 300), (300, 301), (301, 1000)]:   # uneven chunks, one empty
        st.update(torch.from_numpy(x[lo:hi]) if lo % 2 else x[lo:hi])
    assert st.count == 1000
    np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-12, atol=1e-9 * (1 + offset))
    np.testing.assert_allclose(st.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)


def test_feature_stats_errors():
    st = FeatureStats(dim=4)
    with pytest.raises(ValueError, match="no features"):
        st.mean
    with pytest.raises(ValueError, match="4-d"):
        st.update(np.zeros((3, 5)))
    st.update(np.ones((1, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        st.cov


# --- InceptionV3 -------------------------------------------------------------------------------

def test_state_dict_layout_matches_pytorch_fid(net):
    sd = net.state_dict()
    keys = {k for k in sd if not k.endswith("num_batches_tracked")}
    assert keys == PYTORCH_FID_KEYS
    assert len(CONVS) == 94
    assert tuple(sd["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["Mixed_5b.branch_pool.conv.weight"].shape) == (32, 192, 1, 1)
    assert tuple(sd["Mixed_6b.branch7x7_2.conv.weight"].shape) == (128, 128, 1, 7)
    assert tuple(sd["Mixed_6e.branch7x7dbl_2.conv.weight"].shape) == (192, 192, 7, 1)
    assert tuple(sd["Mixed_7c.branch3x3dbl_1.conv.weight"].shape) == (448, 2048, 1, 1)
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == CONV_BN_PARAMS
    assert 21.7e6 < n_params < 21.9e6
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training


def test_fid_specific_pooling(net):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        x = torch.rand(1, 288, 9, 9, generator=g)   # Mixed_5d input
        blk = net.Mixed_5d
        out = blk(x)
        assert torch.equal(out[:, :64], blk.branch1x1(x))   # concatenation order
        pool = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        torch.testing.assert_close(out[:, -64:], blk.branch_pool(pool))
        padded = blk.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=True))
        assert not torch.allclose(out[:, -64:], padded)
        x = torch.rand(1, 1280, 5, 5, generator=g)
        torch.testing.assert_close(net.Mixed_7b(x)[:, -192:],
                                   net.Mixed_7b.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)))
        x = torch.rand(1, 2048, 5, 5, generator=g)
        torch.testing.assert_close(net.Mixed_7c(x)[:, -192:],
                                   net.Mixed_7c.branch_pool(F.max_pool2d(x, 3, 1, 1)))


def test_feature_shapes_resize_and_grayscale(net, images, feats):
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()
    assert feats.std() > 0 and not torch.allclose(feats[0], feats[1])
    big = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
    gray = images[:1, :1]
    with torch.no_grad():
        torch.testing.assert_close(net(big), feats)   # 299x299 in: no second resize
        assert torch.equal(net(gray), net(gray.expand(-1, 3, -1, -1)))
    assert net(gray).shape == (1, 2048)
    with pytest.raises(ValueError, match="expected images"):
        net(torch.zeros(1, 2, 8, 8))


def test_deterministic(net, images, feats):
    with torch.no_grad():
        assert torch.equal(net(images), feats)
    assert torch.equal(load_inception(None, allow_random=True, seed=0).Mixed_7c.branch_pool.conv.weight,
                       net.Mixed_7c.branch_pool.conv.weight)


def test_round_trip_pth_and_safetensors(tmp_path, net, images, feats):
    from safetensors.torch import save_file

    sd = net.state_dict()
    torch.save(sd, tmp_path / "fid.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "fid.safetensors"))
    # pytorch-fid's file layout: a 1008-class fc, possibly no num_batches_tracked, any key order.
    fid_like = {k: v for k, v in reversed(list(sd.items())) if not k.endswith("num_batches_tracked")}
    fid_like.update({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)})
    torch.save(fid_like, tmp_path / FID_WEIGHTS_FILE)
    for name in ("fid.pth", "fid.safetensors", FID_WEIGHTS_FILE):
        with torch.no_grad():
            assert torch.equal(load_inception(str(tmp_path / name))(images), feats), name


def test_load_errors(tmp_path, net):
    for path in (None, str(tmp_path / "absent.pth")):
        with pytest.raises(FileNotFoundError, match="--inception-weights") as err:
            load_inception(path)
        assert FID_WEIGHTS_FILE in str(err.value)
    torch.save({"w": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused"):
        load_inception(str(tmp_path / "evil.pth"))
    sd = net.state_dict()
    tv = dict(sd, **{"AuxLogits.fc.weight": torch.zeros(1000, 768)})   # torchvision's ImageNet layout
    torch.save(tv, tmp_path / "tv.pth")
    with pytest.raises(ValueError, match="torchvision"):
        load_inception(str(tmp_path / "tv.pth"))
    partial = {k: v for k, v in sd.items() if not k.startswith("Mixed_7c.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing keys"):
        load_inception(str(tmp_path / "partial.pth"))
    wrong = dict(sd, **{"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 5, 5)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="shapes"):
        load_inception(str(tmp_path / "wrong.pth"))

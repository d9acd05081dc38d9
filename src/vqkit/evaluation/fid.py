"""Frechet Inception Distance (rFID) compatible with pytorch-fid.

The network is the InceptionV3 variant pytorch-fid uses: its port of TensorFlow's 2015-12-05
Inception graph, whose Mixed blocks differ from torchvision's (average pools that ignore padding,
a max pool in the last block). Parameter names follow pytorch-fid's weight file
pt_inception-2015-12-05-6726825d.pth, so that file loads as-is. Nothing is downloaded: pass the
local file with --inception-weights PATH (pytorch-fid caches it under
~/.cache/torch/hub/checkpoints/). torchvision's ImageNet inception_v3 weights are NOT the FID
weights and are refused.

Inputs are images in [-1, 1] (B, 3, H, W) or grayscale (B, 1, H, W). They are resized bilinearly
to 299x299 (align_corners=False), as pytorch-fid does with its [0, 1] inputs before mapping them
to [-1, 1]; the features are the 2048-d pool3 activations. For numbers comparable with pytorch-fid
run on PNG folders, clamp and quantise images to 8 bits before feeding them in.

Statistics are accumulated in float64 without keeping the features (FeatureStats), and the
distance follows pytorch-fid's calculate_frechet_distance, including its handling of singular
and slightly complex matrix square roots.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..io.weights import describe_mismatch, key_difference, read_state_dict

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPS = 0.001   # the TF graph's batch-norm epsilon
_OPTIONAL_KEYS = ("fc.weight", "fc.bias")   # pytorch-fid's file has a 1008-class fc; unused here

_HELP = (f"FID needs pytorch-fid's Inception weights as a local file: {FID_WEIGHTS_FILE} (the FID port "
         f"of TensorFlow's 2015-12-05 Inception graph; pytorch-fid downloads it to "
         f"~/.cache/torch/hub/checkpoints/), or a .safetensors with the same keys. Pass "
         f"--inception-weights PATH. torchvision's inception_v3 ImageNet weights give different, "
         f"non-comparable numbers and are not accepted.")


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 0.001) -> ReLU; keys <name>.conv.* and <name>.bn.*."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0, device=None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False, device=device)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    # The TF graph averages over the valid positions only: count_include_pad=False.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """Mixed_5b/5c/5d: 1x1, 5x5 and double-3x3 towers plus a pooled 1x1 (224 + pool_features out)."""

    def __init__(self, cin: int, pool_features: int, device=None):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1, device=device)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1, device=device)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, device=device)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, device=device)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, device=device)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, device=device)
        self.branch_pool = BasicConv2d(cin, pool_features, 1, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """Mixed_6a: stride-2 grid reduction, 288 -> 768 channels."""

    def __init__(self, cin: int, device=None):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, device=device)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, device=device)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, device=device)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    """Mixed_6b..6e: factorised 7x7 towers of width c7 (768 -> 768 channels)."""

    def __init__(self, cin: int, c7: int, device=None):
        super().__init__()
        h, v = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, 1, device=device)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1, device=device)
        self.branch7x7_2 = BasicConv2d(c7, c7, **h, device=device)
        self.branch7x7_3 = BasicConv2d(c7, 192, **v, device=device)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, device=device)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **v, device=device)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **h, device=device)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **v, device=device)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **h, device=device)
        self.branch_pool = BasicConv2d(cin, 192, 1, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Mixed_7a: stride-2 grid reduction, 768 -> 1280 channels."""

    def __init__(self, cin: int, device=None):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1, device=device)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, device=device)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, device=device)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), device=device)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), device=device)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (pool='avg', FIDInceptionE_1) and Mixed_7c (pool='max', FIDInceptionE_2): 2048 out."""

    def __init__(self, cin: int, pool: str, device=None):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        h, v = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        self.branch1x1 = BasicConv2d(cin, 320, 1, device=device)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1, device=device)
        self.branch3x3_2a = BasicConv2d(384, 384, **h, device=device)
        self.branch3x3_2b = BasicConv2d(384, 384, **v, device=device)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, device=device)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, device=device)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, **h, device=device)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, **v, device=device)
        self.branch_pool = BasicConv2d(cin, 192, 1, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        # The TF graph max-pools in its last block (most likely a slip in that graph), so FID does too.
        p = _avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's InceptionV3 up to pool3. forward(x in [-1, 1], (B, 1|3, H, W)) -> (B, 2048)."""

    def __init__(self, device: torch.device | str | None = None):
        super().__init__()
        d = device
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, device=d)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, device=d)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, device=d)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, device=d)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, device=d)
        self.Mixed_5b = FIDInceptionA(192, 32, device=d)
        self.Mixed_5c = FIDInceptionA(256, 64, device=d)
        self.Mixed_5d = FIDInceptionA(288, 64, device=d)
        self.Mixed_6a = InceptionB(288, device=d)
        self.Mixed_6b = FIDInceptionC(768, 128, device=d)
        self.Mixed_6c = FIDInceptionC(768, 160, device=d)
        self.Mixed_6d = FIDInceptionC(768, 160, device=d)
        self.Mixed_6e = FIDInceptionC(768, 192, device=d)
        self.Mixed_7a = InceptionD(768, device=d)
        self.Mixed_7b = FIDInceptionE(1280, "avg", device=d)
        self.Mixed_7c = FIDInceptionE(2048, "max", device=d)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FIDInceptionV3:
        return super().train(False)   # batch norm must always use the running statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images (B, 1 or 3, H, W) in [-1, 1], got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x.to(self.Conv2d_1a_3x3.conv.weight.dtype)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):   # bilinear resizing commutes with the affine map
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _random_init(model: FIDInceptionV3, seed: int) -> None:
    """Seeded weights that keep activations O(1) through the depth; the batch-norm statistics are
    randomised too, so a loader that dropped any of them would change the features."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
        elif isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
            m.bias.copy_(0.1 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
            m.num_batches_tracked.zero_()


def load_inception(path: str | None, allow_random: bool = False, *, seed: int = 0) -> FIDInceptionV3:
    """The frozen FID InceptionV3 from pytorch-fid's local weight file (.pth, loaded with
    weights_only=True, or .safetensors). The file's fc layer is ignored. allow_random: seeded random
    weights when the file is absent (tests only: the distances are then not FID)."""
    if path is None or not os.path.isfile(path):
        if not allow_random:
            where = "no --inception-weights given" if path is None else f"{path!r} does not exist"
            raise FileNotFoundError(f"Inception weights not found ({where}). {_HELP}")
        model = FIDInceptionV3(device="meta")   # no default init: it is overwritten next
        model.to_empty(device="cpu")
        with torch.no_grad():
            _random_init(model, seed)
        return model
    sd = {k: v for k, v in read_state_dict(path).items() if k not in _OPTIONAL_KEYS}
    model = FIDInceptionV3(device="meta")
    expected = model.state_dict().keys()
    for k in expected:   # older files may predate batch norm's num_batches_tracked
        if k.endswith(".num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros((), dtype=torch.long)
    missing, unexpected = key_difference(sd, expected)
    if missing or unexpected:
        hint = (" (this looks like torchvision's ImageNet inception_v3, not the FID weights)"
                if any(k.startswith("AuxLogits.") for k in unexpected) else "")
        raise ValueError(f"{path}: not pytorch-fid's FID Inception state dict{hint}: "
                         f"{describe_mismatch(missing, unexpected)}. {_HELP}")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    try:   # assign=True adopts the file's tensors directly
        model.load_state_dict(sd, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: tensor shapes do not match pytorch-fid's InceptionV3: {e}") from e
    return model.requires_grad_(False).eval()


class FeatureStats:
    """Streaming mean and covariance of feature rows, in float64, without keeping the features.

    Sums are taken around a fixed shift (the first batch's mean), which avoids the cancellation of
    the naive sum-of-squares formula when the features' mean is large relative to their spread.
    """

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self.count = 0
        self._shift = self._sum = self._outer = None

    def update(self, features) -> FeatureStats:
        f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) \
            else np.asarray(features, dtype=np.float64)
        if f.ndim != 2:
            raise ValueError(f"expected features (N, D), got shape {f.shape}")
        if self.dim is not None and f.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim}-d features, got {f.shape[1]}")
        if len(f) == 0:
            return self
        if self._shift is None:
            self.dim = f.shape[1]
            self._shift = f.mean(0)
            self._sum = np.zeros(self.dim)
            self._outer = np.zeros((self.dim, self.dim))
        c = f - self._shift
        self.count += len(f)
        self._sum += c.sum(0)
        self._outer += c.T @ c
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("FeatureStats: no features were added")
        return self._shift + self._sum / self.count

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (divides by N - 1), as np.cov(features, rowvar=False)."""
        if self.count < 2:
            raise ValueError(f"FeatureStats: a covariance needs at least 2 features, got {self.count}")
        d = self._sum / self.count
        return (self._outer - self.count * np.outer(d, d)) / (self.count - 1)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), computed as pytorch-fid does: when the
    square root is not finite, eps is added to both diagonals; a complex root is accepted (its real
    part kept) only if its diagonal's imaginary part is negligible, else ValueError."""
    try:
        from scipy import linalg
    except ImportError as e:  # pragma: no cover - scipy ships with the image extra (scikit-image)
        raise ImportError("FID needs scipy (scipy.linalg.sqrtm): pip install scipy") from e
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    if s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"covariances must both be {len(mu1)}x{len(mu1)}, got {s1.shape} and {s2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():   # scipy warns on singular input; finiteness is checked below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            warnings.warn(f"FID: the covariance product is singular; adding {eps} to the diagonals",
                          RuntimeWarning, stacklevel=2)
            offset = np.eye(len(mu1)) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: the covariance product's square root has an imaginary component "
                             f"of up to {np.max(np.abs(covmean.imag)):.6g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid_from_features(a, b) -> float:
    """FID between two feature sets (N, D) given as arrays or tensors."""
    sa, sb = FeatureStats().update(a), FeatureStats().update(b)
    return frechet_distance(sa.mean, sa.cov, sb.mean, sb.cov)

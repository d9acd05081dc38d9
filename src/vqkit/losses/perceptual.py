"""VGG16 perceptual losses for image tokenizers: LPIPS (learned linear heads over five VGG16 taps)
and SeQ-GAN's semantic-enhanced loss L^a = a L_sem + (1 - a) L_low (the paper's raw-feature form,
or a unit-normalised variant).

Nothing is downloaded. `loss.vgg_weights` points at torchvision's vgg16 ImageNet state dict
(vgg16-397923af.pth, or a .safetensors with the same keys) and `loss.lpips_weights` at the `lpips`
wheel's lpips/weights/v0.1/vgg.pth. Our VGG16 uses torchvision's parameter names, so both load as-is.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..io.weights import describe_mismatch, key_difference, read_state_dict

# torchvision's configuration "D": conv widths, "M" = 2x2 max-pool.
_CFG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)   # in `features`
CLASSIFIER_INDICES = (0, 3, 6)                                       # in `classifier`
TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}
TAP_CHANNELS = (64, 128, 256, 512, 512)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_VGG_HELP = ("The perceptual loss needs torchvision's VGG16 ImageNet weights as a local file (state dict "
             "with keys features.0.weight ... classifier.6.bias, e.g. vgg16-397923af.pth or a .safetensors "
             "with the same keys). Set loss.vgg_weights=/path/to/vgg16-397923af.pth, or loss.perceptual=0 "
             "to disable the perceptual loss.")
_LPIPS_HELP = ("LPIPS needs its learned linear heads as a local file: the `lpips` package's "
               "lpips/weights/v0.1/vgg.pth (keys lin0.model.1.weight ... lin4.model.1.weight). Set "
               "loss.lpips_weights=/path/to/vgg.pth, or loss.perceptual_kind=seqgan (no learned heads), "
               "or loss.perceptual=0 to disable the perceptual loss.")


def vgg16_keys(classifier: bool = True) -> list[str]:
    """torchvision's vgg16 state-dict keys (without the classifier when classifier=False)."""
    names = [f"features.{i}" for i in CONV_INDICES]
    names += [f"classifier.{i}" for i in CLASSIFIER_INDICES] if classifier else []
    return [f"{n}.{p}" for n in names for p in ("weight", "bias")]


def _check_keys(path: str, sd: dict, expected: list[str], what: str) -> None:
    missing, unexpected = key_difference(sd, expected)
    if missing or unexpected:
        raise ValueError(f"{path}: not {what}: {describe_mismatch(missing, unexpected)}")


class VGG16Features(nn.Module):
    """Frozen VGG16 (configuration D). forward(x in [-1, 1], logits=False) -> (five taps relu1_2 ..
    relu5_3, classifier logits or None). Grayscale inputs are repeated to RGB."""

    def __init__(self, classifier: bool = True, device: torch.device | str | None = None):
        super().__init__()
        layers, cin = [], 3
        for v in _CFG_D:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:  # not in-place: the taps are kept for the loss
                layers += [nn.Conv2d(cin, v, 3, padding=1, device=device), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096, device=device), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 4096, device=device), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 1000, device=device)) if classifier else None
        self.register_buffer("shift", torch.empty(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.empty(1, 3, 1, 1), persistent=False)
        self.reset_constants()
        self.requires_grad_(False)
        self.eval()

    def reset_constants(self) -> None:
        # ((x + 1) / 2 - mean) / std == (x - (2 mean - 1)) / (2 std): the LPIPS ScalingLayer constants.
        self.shift = torch.tensor([2 * m - 1 for m in _IMAGENET_MEAN]).view(1, 3, 1, 1)
        self.scale = torch.tensor([2 * s for s in _IMAGENET_STD]).view(1, 3, 1, 1)

    def train(self, mode: bool = True) -> VGG16Features:
        # Always eval: the classifier's dropout must not randomise the loss when the owner trains.
        return super().train(False)

    def forward(self, x: torch.Tensor, logits: bool = False) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        if logits and self.classifier is None:
            raise RuntimeError("this VGG16 was loaded without its classifier; logits are unavailable")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        taps, tap_ids, last = [], set(TAPS.values()), TAPS["relu5_3"]
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in tap_ids:
                taps.append(h)
            if i == last and not logits:
                break  # the final max-pool only feeds the classifier
        out = self.classifier(F.adaptive_avg_pool2d(h, 7).flatten(1)) if logits else None
        return taps, out


def _random_init(model: VGG16Features, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)  # torchvision's init scheme, reproducible
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01, generator=g)
            nn.init.zeros_(m.bias)


def load_vgg16(path: str | None, allow_random: bool = False, *, classifier: bool = True,
               seed: int = 0) -> VGG16Features:
    """A frozen VGG16 from a local torchvision-layout state dict. classifier=False skips the
    ~120M fully connected weights (LPIPS and L_low do not use them). allow_random: seeded random
    weights when the file is absent (tests only: the distances are then not perceptual)."""
    if path is None or not os.path.isfile(path):
        if not allow_random:
            where = "loss.vgg_weights is not set" if path is None else f"{path!r} does not exist"
            raise FileNotFoundError(f"VGG16 weights not found ({where}). {_VGG_HELP}")
        model = VGG16Features(classifier, device="meta")  # no default init: it is overwritten next
        model.to_empty(device="cpu")
        model.reset_constants()
        _random_init(model, seed)
        return model.requires_grad_(False).eval()
    sd = read_state_dict(path)
    if not classifier:
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    _check_keys(path, sd, vgg16_keys(classifier), "a torchvision vgg16 state dict (configuration D, no batch norm)")
    model = VGG16Features(classifier, device="meta")  # assign=True adopts the file's tensors directly
    try:
        model.load_state_dict({k: v.float() for k, v in sd.items()}, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: tensor shapes do not match torchvision's vgg16: {e}") from e
    return model.requires_grad_(False).eval()


def load_lpips_heads(path: str | None, allow_random: bool = False) -> dict[str, torch.Tensor] | None:
    """LPIPS linear heads from the lpips wheel's vgg.pth; None (= ones) when absent and allow_random."""
    if path is None or not os.path.isfile(path):
        if not allow_random:
            where = "loss.lpips_weights is not set" if path is None else f"{path!r} does not exist"
            raise FileNotFoundError(f"LPIPS weights not found ({where}). {_LPIPS_HELP}")
        return None
    sd = read_state_dict(path)
    _check_keys(path, sd, [f"lin{i}.model.1.weight" for i in range(5)], "an LPIPS (vgg) linear-head file")
    for i, c in enumerate(TAP_CHANNELS):
        if tuple(sd[f"lin{i}.model.1.weight"].shape) != (1, c, 1, 1):
            raise ValueError(f"{path}: lin{i}.model.1.weight must have shape (1, {c}, 1, 1)")
    return sd


def _unit(f: torch.Tensor) -> torch.Tensor:
    # F.normalize rather than lpips' f / (|f| + eps): same value, but no NaN gradient where a
    # position's channels are all zero after the ReLU (d sqrt(s)/ds is infinite at s = 0).
    return F.normalize(f.float(), dim=1, eps=1e-10)


def _layer_distances(fx: list[torch.Tensor], fy: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer and sample: spatial mean of sum_c (unit(fx) - unit(fy))^2, each in [0, 4]."""
    return [(_unit(a) - _unit(b)).square().sum(1).mean((1, 2)) for a, b in zip(fx, fy)]


class _LinHead(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        # lpips has a Dropout at index 0 (inactive in eval); Identity keeps the weight at model.1.
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS (Zhang et al. 2018), VGG variant: d(x, y) = sum_l mean_hw w_l . (unit(f_l x) - unit(f_l y))^2.
    heads=None uses w_l = 1 (then d is the sum of the five unweighted distances)."""

    def __init__(self, vgg: VGG16Features, heads: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.net = vgg
        for i, c in enumerate(TAP_CHANNELS):
            head = _LinHead(c)
            w = torch.ones(1, c, 1, 1) if heads is None else heads[f"lin{i}.model.1.weight"].float()
            # Heads are trained non-negative in lpips; clamping guarantees d >= 0 for any file.
            head.model[1].weight.data.copy_(w.clamp_min(0))
            self.add_module(f"lin{i}", head)  # lin0..lin4: the lpips key names
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feats, _ = self.net(torch.cat([x, y]))  # one pass over both images
        total = 0.0
        for i, f in enumerate(feats):
            a, b = f.chunk(2)
            d = (_unit(a) - _unit(b)).square()
            total = total + getattr(self, f"lin{i}").model[1](d).mean((1, 2, 3))
        return total.mean()


def paper_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SeQ-GAN's per-layer term, per sample: 1/(H W C) ||a - b||^2 over raw features (B, C, H, W)
    or logits (B, C)."""
    return (a.float() - b.float()).square().flatten(1).mean(1)


class SemanticPerceptualLoss(nn.Module):
    """SeQ-GAN: L = alpha L_sem + (1 - alpha) L_low; alpha = 1 in phase 1, 0 in phase 2 (decoder
    fine-tuning). The paper's form (normalized=False): each layer's 1/(H_l W_l C_l) ||f_l(x) -
    f_l(y)||^2 on raw VGG16 features, summed over relu1_2..relu5_3 for L_low and over relu5_3 and the
    classifier logits for L_sem. normalized=True (loss.perceptual_kind=seqgan_normalized): LPIPS-style
    distances instead, features unit-normalised per pixel and the low layers averaged; its scale no
    longer depends on the features' magnitude. The logit term is MSE (the paper's 1/C ||.||^2) or KL."""

    def __init__(self, vgg: VGG16Features, alpha: float = 1.0, logit_loss: str = "mse", normalized: bool = False):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if logit_loss not in ("mse", "kl"):
            raise ValueError(f"logit_loss must be 'mse' or 'kl', got {logit_loss!r}")
        if alpha > 0 and vgg.classifier is None:
            raise ValueError("alpha > 0 needs the VGG16 classifier (load_vgg16(..., classifier=True))")
        self.net, self.alpha, self.logit_loss, self.normalized = vgg, float(alpha), logit_loss, normalized
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> SemanticPerceptualLoss:
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feats, logits = self.net(torch.cat([x, y]), logits=self.alpha > 0)
        pairs = [f.chunk(2) for f in feats]
        if self.normalized:
            dists = _layer_distances(*zip(*pairs))
            low = torch.stack(dists).mean(0)
        else:
            dists = [paper_distance(a, b) for a, b in pairs]
            low = torch.stack(dists).sum(0)
        if self.alpha == 0:
            return low.mean()
        lx, ly = logits.float().chunk(2)
        if self.logit_loss == "mse":
            logit_term = paper_distance(lx, ly)
        else:  # KL(softmax(ly) || softmax(lx)): the reference's class distribution as the target
            logit_term = F.kl_div(lx.log_softmax(1), ly.log_softmax(1), log_target=True, reduction="none").sum(1)
        sem = dists[-1] + logit_term
        return (self.alpha * sem + (1 - self.alpha) * low).mean()


PERCEPTUAL_KINDS = ("lpips", "seqgan", "seqgan_normalized")


def build_perceptual(loss_cfg, allow_random: bool = False) -> nn.Module | None:
    """The perceptual loss module loss_cfg asks for, or None when loss.perceptual == 0."""
    if loss_cfg.perceptual == 0:
        return None
    if loss_cfg.perceptual_kind == "lpips":
        heads = load_lpips_heads(loss_cfg.lpips_weights, allow_random)  # small file: fail fast
        return LPIPS(load_vgg16(loss_cfg.vgg_weights, allow_random, classifier=False), heads)
    if loss_cfg.perceptual_kind in ("seqgan", "seqgan_normalized"):
        alpha = loss_cfg.perceptual_alpha
        vgg = load_vgg16(loss_cfg.vgg_weights, allow_random, classifier=alpha > 0)
        return SemanticPerceptualLoss(vgg, alpha, normalized=loss_cfg.perceptual_kind == "seqgan_normalized")
    raise ValueError(f"loss.perceptual_kind: unknown {loss_cfg.perceptual_kind!r}; available: "
                     f"{', '.join(PERCEPTUAL_KINDS)}")

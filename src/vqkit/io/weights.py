"""Weight files: safetensors only (never a pickle), key/shape mismatches as one clear message,
a hash that identifies a set of weights, and checkpoint directories (config.yaml + model.safetensors,
or a run directory whose checkpoints/latest names one, or a hub repo id: io/hub.py). Ground floor: imports
nothing above vqkit.io."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .files import atomic_write
from .memory import refuse_if_over
from .paths import read_pointer

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"
T = TypeVar("T")


# First bytes of weight files that are not safetensors, named so the error says what the file is.
_FOREIGN_MAGIC = ((b"PK\x03\x04", "a zip archive (PyTorch's torch.save format)"),
                  (b"\x93NUMPY", "a NumPy .npy array"), (b"\x89HDF", "an HDF5 file"), (b"GGUF", "a GGUF file"))


def save_weights(module: nn.Module, path: Path, fmt: str | None = None) -> None:
    """A module's state dict as a safetensors file (CPU, contiguous), with its format name as metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": fmt} if fmt else None))


def _refuse_foreign(path: Path) -> None:
    """Name and refuse weight files that are not safetensors: pickles (torch.save files) would run
    code on load, so they are never opened by a loader."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ValueError(f"{path}: cannot read weights ({e.strerror or e})") from None
    kind = next((what for magic, what in _FOREIGN_MAGIC if head.startswith(magic)), None)
    if kind is None and len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        kind = "a Python pickle (legacy torch.save format)"
    if kind is not None:
        raise ValueError(f"{path}: cannot read weights: this is {kind}, not safetensors; vqkit never "
                         "unpickles weights (convert the state dict with safetensors.torch.save_file)")


def _invalid(path: Path, e: Exception) -> ValueError:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return ValueError(f"{path}: cannot read weights, not a valid safetensors file ({text})")


def read_weights(path: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file's tensors. Nothing else is read (see _refuse_foreign)."""
    _refuse_foreign(path)
    try:
        return load_file(str(path), device=str(map_location))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise _invalid(path, e) from None


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, from its header alone (no tensor read)."""
    _refuse_foreign(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise _invalid(path, e) from None


def check_fits(skeleton: nn.Module, path: Path, where: str) -> None:
    """Before the real model is built: the file's tensor shapes (header) must be the shapes the
    config gives (`skeleton`: the model built on the meta device, which allocates nothing), and
    the weights must fit in memory. A config.yaml edited to absurd sizes is refused here, naming
    the weights, instead of the allocator failing on a model that could never load them."""
    shapes = upgraded(skeleton, weight_shapes(path))
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    wrong = [k for k in expected if k in shapes and shapes[k] != expected[k]]
    if wrong:
        k = wrong[0]
        raise ValueError(f"{where}: weights do not fit the configured model (size mismatch for {k}: "
                         f"the file has {list(shapes[k])}, the config gives {list(expected[k])}"
                         f"{f', and {len(wrong) - 1} more' if len(wrong) > 1 else ''}); is this a checkpoint "
                         "of another model, or was its config edited?")
    _key_mismatch(*key_difference(shapes, expected), where)
    size = sum(v.numel() * v.element_size() for v in skeleton.state_dict().values())
    refuse_if_over([(where, size, "the weights")], "loading this model", gpu=False)


def upgraded(module: nn.Module, state: dict[str, T]) -> dict[str, T]:
    """`state` (tensors or shapes) with names of older checkpoints renamed by the module's own
    `upgrade_state`, which a model whose tensors were renamed defines; else `state` as it is."""
    upgrade = getattr(module, "upgrade_state", None)
    return upgrade(state) if upgrade is not None else state


def load_matching(module: nn.Module, state: dict, where: str) -> None:
    """load_state_dict (older checkpoints' names upgraded) that turns any mismatch (keys or shapes)
    into one clear ValueError."""
    state = upgraded(module, state)
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:   # shape mismatches raise even with strict=False
        detail = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise ValueError(f"{where}: weights do not fit the configured model ({detail}); "
                         "is this a checkpoint of another model?") from None
    _key_mismatch(missing, unexpected, where)


def describe_mismatch(missing: list[str], unexpected: list[str], shown: int = 6) -> str:
    """'missing keys [...], unexpected keys [...]' (the first `shown` of each), '' when both are empty."""
    cut = lambda keys: f"{keys[:shown]}{'...' if len(keys) > shown else ''}"  # noqa: E731
    return ", ".join(f"{what} keys {cut(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected))
                     if keys)


def key_difference(state: dict, expected) -> tuple[list[str], list[str]]:
    """(missing, unexpected) keys of `state` against the `expected` names, sorted."""
    return sorted(set(expected) - state.keys()), sorted(state.keys() - set(expected))


def _key_mismatch(missing: list[str], unexpected: list[str], where: str) -> None:
    if missing or unexpected:
        raise ValueError(f"{where}: weights do not fit the configured model "
                         f"({describe_mismatch(missing, unexpected, 3)}); is this a checkpoint of another model?")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A third-party weight file (VGG, LPIPS, Inception): safetensors, or a PyTorch .pth/.pt read
    with torch.load(weights_only=True), which refuses anything but tensors and plain containers."""
    suffix = Path(path).suffix.lower()
    if suffix == ".safetensors":
        return dict(read_weights(Path(path)))
    if suffix not in (".pth", ".pt"):
        raise ValueError(f"{path}: expected a .pth, .pt or .safetensors state dict")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refused to load: only plain tensor state dicts are accepted "
                         f"(torch.load(weights_only=True) failed: {str(e).splitlines()[0]})") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return dict(obj)


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """Identity of a set of weights: sha256 over names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


def resolve_checkpoint_dir(path: str | Path, revision: str | None = None,
                           files: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME), **hub) -> Path:
    """A directory with model.safetensors, or a run directory whose `checkpoints/latest` names one;
    or, where no such local path exists, a Hugging Face Hub repo id `namespace/name` at `revision`,
    whose `files` come from (or into) the huggingface_hub cache (io/hub.py; `hub`: cache_dir,
    local_files_only, token)."""
    from .hub import download_checkpoint, is_repo_id

    if is_repo_id(path):
        return download_checkpoint(str(path), files, revision, **hub)
    p = Path(path)
    if revision is not None:
        raise ValueError(f"{p}: revision={revision!r} applies to Hugging Face Hub repos (namespace/name), "
                         "not to a local directory")
    if (p / WEIGHTS_NAME).is_file() and (p / CONFIG_NAME).is_file():
        return p
    latest = p / "checkpoints" / "latest"
    if latest.is_file():
        name, d = read_pointer(latest)   # refuses names leading out of checkpoints/
        if name and (d / WEIGHTS_NAME).is_file():
            return d
        raise FileNotFoundError(f"{latest}: names checkpoint {name!r}, but {d} holds no {WEIGHTS_NAME} "
                                "(deleted or never finished?)")
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such checkpoint or run directory")
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: a file, not a checkpoint directory (pass the folder holding "
                                f"{CONFIG_NAME} + {WEIGHTS_NAME})")
    absent = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (p / n).is_file()]
    raise FileNotFoundError(f"{p}: not a vqkit checkpoint, no {' or '.join(absent)} (expected {CONFIG_NAME} + "
                            f"{WEIGHTS_NAME}, or a run directory with checkpoints/latest)")

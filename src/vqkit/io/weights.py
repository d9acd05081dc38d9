"""Weight files: safetensors only (never a pickle), key/shape mismatches as one clear message,
a hash that identifies a set of weights, and checkpoint directories (config.yaml + model.safetensors,
or a run directory whose checkpoints/latest names one). The ground floor: imports nothing of vqkit."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"


# First bytes of weight files that are not safetensors, named so the error says what the file is.
_FOREIGN_MAGIC = ((b"PK\x03\x04", "a zip archive (PyTorch's torch.save format)"),
                  (b"\x93NUMPY", "a NumPy .npy array"), (b"\x89HDF", "an HDF5 file"), (b"GGUF", "a GGUF file"))


def save_weights(module: nn.Module, path: Path, fmt: str | None = None) -> None:
    """A module's state dict as a safetensors file (CPU, contiguous), with its format name as metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"format": fmt} if fmt else None)


def read_weights(path: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file's tensors. Nothing else is read: pickles (torch.save files) would run
    code on load, so they are named and refused, never opened."""
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
    try:
        return load_file(str(path), device=str(map_location))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path}: cannot read weights, not a valid safetensors file ({text})") from None


def load_matching(module: nn.Module, state: dict, where: str) -> None:
    """load_state_dict that turns any mismatch (keys or shapes) into one clear ValueError."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:   # shape mismatches raise even with strict=False
        detail = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise ValueError(f"{where}: weights do not fit the configured model ({detail}); "
                         "is this a checkpoint of another model?") from None
    if missing or unexpected:
        raise ValueError(f"{where}: weights do not fit the configured model "
                         f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}); "
                         "is this a checkpoint of another model?")


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """Identity of a set of weights: sha256 over names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A directory with model.safetensors, or a run directory whose `checkpoints/latest` names one."""
    p = Path(path)
    if (p / WEIGHTS_NAME).is_file() and (p / CONFIG_NAME).is_file():
        return p
    latest = p / "checkpoints" / "latest"
    if latest.is_file():
        try:
            name = latest.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        d = p / "checkpoints" / name
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

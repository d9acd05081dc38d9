"""Complete, atomic training checkpoints.

RUN_DIR/checkpoints/step_00001000/
    config.yaml, model.safetensors       the inference part (Tokenizer.from_pretrained reads these)
    discriminator.safetensors            every discriminator, LeCam EMA buffers included
    train_state.safetensors / .json      optimisers, schedulers, step, counters, RNG states
RUN_DIR/checkpoints/latest               names the newest complete checkpoint

A checkpoint is written into a temporary directory, every file fsynced, then renamed into place;
only then does `latest` move (itself replaced atomically). A crash or a full disk at any point
leaves the previous checkpoint and `latest` untouched.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..models.tokenizer import CONFIG_NAME, WEIGHTS_NAME, load_matching
from .state_io import load_state, save_state

DISC_NAME = "discriminator.safetensors"


class CheckpointError(RuntimeError):
    pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(path)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model, discriminator, train_state: dict, keep_last: int) -> Path:
    """Write a complete checkpoint for `step`; returns its directory. Raises CheckpointError (with the
    previous checkpoint intact) when the disk refuses."""
    ckpt_root = Path(run_dir) / "checkpoints"
    name = f"step_{step:08d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".{name}.tmp-{os.getpid()}"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(tmp)
        if discriminator is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in discriminator.state_dict().items()},
                      str(tmp / DISC_NAME))
        save_state(train_state, tmp, "train_state")
        _fsync_tree(tmp)
        if final.exists():   # re-saving the same step (e.g. final save right after a periodic one)
            shutil.rmtree(final)
        os.replace(tmp, final)
        latest_tmp = ckpt_root / f".latest.tmp-{os.getpid()}"
        latest_tmp.write_text(name + "\n")
        with open(latest_tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(latest_tmp, ckpt_root / "latest")
        _fsync_dir(ckpt_root)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        prev = latest_checkpoint(run_dir)
        raise CheckpointError(f"could not write checkpoint {final} ({e.strerror or e}); "
                              f"previous checkpoint {'kept: ' + str(prev) if prev else 'none'}") from None
    _prune(ckpt_root, keep_last, keep=final)
    return final


def _prune(ckpt_root: Path, keep_last: int, keep: Path) -> None:
    done = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
    for old in done[:-keep_last]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `latest` names, if it is complete; else the newest complete one; else None."""
    ckpt_root = Path(run_dir) / "checkpoints"
    candidates = []
    latest = ckpt_root / "latest"
    if latest.is_file():
        candidates.append(ckpt_root / latest.read_text().strip())
    candidates += sorted((p for p in ckpt_root.glob("step_*") if p.is_dir()), reverse=True)
    for c in candidates:
        if all((c / f).is_file() for f in (CONFIG_NAME, WEIGHTS_NAME, "train_state.json", "train_state.safetensors")):
            return c
    return None


def load_checkpoint(ckpt: Path, model, discriminator) -> dict:
    """Load weights into `model` / `discriminator` in place; return the train state dict."""
    try:
        state = load_file(str(ckpt / WEIGHTS_NAME))
    except Exception as e:
        raise CheckpointError(f"{ckpt / WEIGHTS_NAME}: cannot read ({e})") from None
    _load_strict(model, state, ckpt / WEIGHTS_NAME)
    if discriminator is not None:
        if not (ckpt / DISC_NAME).is_file():
            raise CheckpointError(f"{ckpt}: has no {DISC_NAME}, but this run trains a discriminator")
        _load_strict(discriminator, load_file(str(ckpt / DISC_NAME)), ckpt / DISC_NAME)
    return load_state(ckpt, "train_state")


def _load_strict(module, state: dict, where: Path) -> None:
    try:
        load_matching(module, state, str(where))
    except ValueError as e:
        raise CheckpointError(str(e)) from None

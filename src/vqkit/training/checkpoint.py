"""Complete, atomic training checkpoints.

RUN_DIR/checkpoints/step_00001000/
    config.yaml, model.safetensors       the inference part (Tokenizer / prior from_pretrained reads
                                         these); the EMA weights when train.ema_decay > 0
    discriminator.safetensors, ...       every other module the run trains (discriminators with their
                                         LeCam EMA buffers; online_model.safetensors under EMA)
    train_state.safetensors / .json      optimisers, schedulers, step, counters, RNG states
RUN_DIR/checkpoints/latest               names the newest complete checkpoint
RUN_DIR/checkpoints/best_step_00000750/  the best held-out checkpoint so far (a complete one too)
RUN_DIR/checkpoints/best                 names it

A checkpoint is written into a temporary directory, every file fsynced, then renamed into place;
only then does the pointer move (itself replaced atomically). A crash or a full disk at any point
leaves the previous checkpoint and pointer untouched. The latest `keep_last` step_* checkpoints are
kept, and the best one besides.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..io.files import atomic_write, fsync_dir, fsync_file
from ..io.paths import UnsafePointerError, check_confined, read_pointer
from ..io.weights import CONFIG_NAME, WEIGHTS_NAME, load_matching, read_weights, save_weights
from .state_io import load_state, save_state


class CheckpointError(RuntimeError):
    pass


def _fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        fsync_file(f)
    fsync_dir(path)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write(ckpt_root: Path, name: str, pointer: str, model, modules: dict, train_state: dict) -> Path:
    final = ckpt_root / name
    tmp = ckpt_root / f".{name}.tmp-{os.getpid()}"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(tmp)
        for key, module in modules.items():
            save_weights(module, tmp / f"{key}.safetensors")
        save_state(train_state, tmp, "train_state")
        _fsync_tree(tmp)
        if final.exists():   # re-saving the same step (e.g. final save right after a periodic one)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(ckpt_root)
        atomic_write(ckpt_root / pointer, name + "\n")   # the pointer moves only now
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        prev = _pointed(ckpt_root, pointer)
        raise CheckpointError(f"could not write checkpoint {final} ({e.strerror or e}); "
                              f"previous checkpoint {'kept: ' + str(prev) if prev else 'none'}") from None
    return final


def save_checkpoint(run_dir: Path, step: int, model, modules: dict, train_state: dict, keep_last: int) -> Path:
    """Write a complete checkpoint for `step`; returns its directory. `model` has save_pretrained;
    `modules` are further state dicts to keep ({file stem: module}). Raises CheckpointError (with the
    previous checkpoint intact) when the disk refuses."""
    ckpt_root = Path(run_dir) / "checkpoints"
    final = _write(ckpt_root, f"step_{step:08d}", "latest", model, modules, train_state)
    _prune(ckpt_root, "step_*", keep_last, keep=final)
    return final


def save_best(run_dir: Path, step: int, model, modules: dict, train_state: dict, keep_last: int = 1) -> Path:
    """Like save_checkpoint, as the run's best (`best_step_N`, named by `checkpoints/best`); the
    previous best is deleted only after the new one is complete."""
    ckpt_root = Path(run_dir) / "checkpoints"
    final = _write(ckpt_root, f"best_step_{step:08d}", "best", model, modules, train_state)
    _prune(ckpt_root, "best_step_*", 1, keep=final)
    return final


def best_checkpoint(run_dir: Path) -> Path | None:
    return _pointed(Path(run_dir) / "checkpoints", "best")


def _pointed(ckpt_root: Path, pointer: str) -> Path | None:
    p = ckpt_root / pointer
    if p.is_file():
        try:
            name, d = read_pointer(p)   # never a folder outside checkpoints/
        except UnsafePointerError as e:
            raise CheckpointError(str(e)) from None
        if name and _complete(d):
            return d
    return None


def _prune(ckpt_root: Path, pattern: str, keep_last: int, keep: Path) -> None:
    done = sorted(p for p in ckpt_root.glob(pattern) if p.is_dir())
    for old in done[:-keep_last]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def _complete(d: Path) -> bool:
    return d.is_dir() and all((d / f).is_file() for f in (CONFIG_NAME, WEIGHTS_NAME, "train_state.json",
                                                           "train_state.safetensors"))


def _step_of(d: Path) -> int:
    return int(d.name.rsplit("_", 1)[-1])


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (periodic or best; `--resume auto`), or None. Temporary
    directories of an interrupted save are never complete checkpoints: they start with a dot."""
    ckpt_root = Path(run_dir) / "checkpoints"
    found = list(ckpt_root.glob("step_*")) + list(ckpt_root.glob("best_step_*"))
    for p in found:   # a run directory from elsewhere must not make a resume read other files
        try:
            check_confined(p, ckpt_root, str(p))
        except UnsafePointerError as e:
            raise CheckpointError(str(e)) from None
    done = [p for p in found if _complete(p)]
    # on a tie the periodic one: it is the checkpoint `latest` names
    return max(done, key=lambda p: (_step_of(p), p.name.startswith("step_")), default=None)


def load_checkpoint(ckpt: Path, model, modules: dict) -> dict:
    """Load weights into `model` and every module in `modules` ({file stem: module}) in place;
    return the train state dict."""
    for path, module in [(ckpt / WEIGHTS_NAME, model)] + [(ckpt / f"{k}.safetensors", m) for k, m in modules.items()]:
        if not path.is_file():
            raise CheckpointError(f"{ckpt}: has no {path.name}, but this run needs it (a checkpoint of "
                                  "another kind of run?)")
        try:
            state = read_weights(path)   # refuses (and names) pickles; never unpickles
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        _load_strict(module, state, path)
    return load_state(ckpt, "train_state")


def _load_strict(module, state: dict, where: Path) -> None:
    try:
        load_matching(module, state, str(where))
    except ValueError as e:
        raise CheckpointError(str(e)) from None

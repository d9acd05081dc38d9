"""Tokens on disk: `name.npy` (integer array, never pickled) + `name.json` sidecar saying which
tokenizer made them, so tokens are never decoded by a tokenizer they do not belong to."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .io.files import TooLargeError, atomic_write, read_limited

FORMAT = "vqkit-tokens-v1"
SIDECAR_LIMIT = 2**20   # a sidecar is a few hundred bytes


class TokenFileError(ValueError):
    pass


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def tokenizer_meta(tokenizer) -> dict:
    meta = {"format": FORMAT, "tokenizer_id": tokenizer.tokenizer_id, "tokenizer_name": tokenizer.config.name,
            "modality": tokenizer.modality, "codebook_size": tokenizer.codebook_size,
            "channels_per_position": tokenizer.tokens_per_position, "spatial_axes": tokenizer.spatial_dims}
    meta["bits_per_token"] = tokenizer.bits_per_token
    stages = getattr(tokenizer, "stages", None)
    if stages is not None:   # residual: the channels are stages, decodable from the first k
        meta.update(residual=True, stages=stages, bits_per_position=tokenizer.bits_per_position)
    if tokenizer.frontend is not None:   # a time signal: rates and streaming facts
        meta.update(tokens_per_second=tokenizer.tokens_per_second, bits_per_second=tokenizer.bits_per_second)
        if stages is not None:
            meta["bits_per_second_by_stages"] = tokenizer.bits_per_second_by_stages()
        # the streaming facts, measured on the model; looked up on the class, since touching the
        # property runs the probe, which raises for models without a finite field (time_facts says so)
        if hasattr(type(tokenizer), "time_context"):
            from .models.time_context import time_facts

            facts = time_facts(tokenizer)
            meta.update(causal=facts["causal"], latency_ms=facts.get("latency_ms"))
    return meta


def save_tokens(path: str | Path, tokens: np.ndarray, tokenizer, extra: dict | None = None) -> Path:
    path = Path(path)
    if path.suffix != ".npy":
        path = path.with_suffix(".npy")
    tokens = np.asarray(tokens)
    if not np.issubdtype(tokens.dtype, np.integer):
        raise TokenFileError(f"{path}: tokens must be integers, got dtype {tokens.dtype}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= tokenizer.codebook_size):
        raise TokenFileError(f"{path}: token ids out of range [0, {tokenizer.codebook_size})")
    dtype = np.int16 if tokenizer.codebook_size <= 2**15 else np.int32 if tokenizer.codebook_size <= 2**31 else np.int64
    arr = np.ascontiguousarray(tokens.astype(dtype))
    atomic_write(path, lambda tmp: np.save(tmp, arr, allow_pickle=False))
    meta = {**tokenizer_meta(tokenizer), "shape": list(arr.shape), **(extra or {})}
    atomic_write(sidecar_path(path), json.dumps(meta, indent=1))
    return path


def load_tokens(path: str | Path, tokenizer=None, mmap: bool = False) -> tuple[np.ndarray, dict]:
    """Read tokens and their sidecar; with `tokenizer`, refuse tokens made by another one.

    mmap: return a read-only np.memmap (pages read on use), so a large token corpus costs no memory
    up front; the checks are the same (the range check reads the whole file once)."""
    path = Path(path)
    side = sidecar_path(path)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        if not isinstance(arr, np.ndarray):   # an .npz archive under an .npy name
            arr.close()
            raise ValueError("an .npz archive, not a single array")
    except FileNotFoundError:
        raise TokenFileError(f"{path}: no such token file") from None
    except ValueError as e:
        raise TokenFileError(f"{path}: not a token array ({e})") from None
    except Exception as e:
        raise TokenFileError(f"{path}: cannot read as .npy ({e})") from None
    if not np.issubdtype(arr.dtype, np.integer):
        raise TokenFileError(f"{path}: tokens must be integers, found dtype {arr.dtype}")
    if arr.ndim not in (1, 2, 3, 4) or arr.size == 0:
        raise TokenFileError(f"{path}: expected a non-empty token array of 1 to 4 axes, found shape {arr.shape}")
    try:
        meta = json.loads(read_limited(side, SIDECAR_LIMIT, "token sidecar"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise TokenFileError(f"{path}: sidecar {side.name} is missing, so the tokens' tokenizer is unknown") from None
    except TooLargeError as e:
        raise TokenFileError(str(e)) from None
    except (ValueError, RecursionError) as e:   # RecursionError: absurdly deep JSON nesting
        raise TokenFileError(f"{side}: not a valid token sidecar ({type(e).__name__}: {str(e)[:200]})") from None
    except OSError as e:   # a directory, no permission, an I/O error
        raise TokenFileError(f"{side}: cannot read the token sidecar ({e.strerror or e})") from None
    if meta.get("format") != FORMAT:
        raise TokenFileError(f"{side}: unknown format {meta.get('format')!r} (expected {FORMAT})")
    if tokenizer is not None:
        if meta.get("tokenizer_id") != tokenizer.tokenizer_id:
            raise TokenFileError(f"{path}: made by tokenizer {meta.get('tokenizer_id')} "
                                 f"({meta.get('tokenizer_name')}), not by this one ({tokenizer.tokenizer_id}, "
                                 f"{tokenizer.config.name}); decode it with the checkpoint that encoded it")
        dims = tokenizer.token_dims
        if arr.ndim not in (dims, dims + 1) or (tokenizer.tokens_per_position > 1
                                                 and arr.shape[-1] != tokenizer.tokens_per_position):
            raise TokenFileError(f"{path}: shape {arr.shape} does not fit this tokenizer "
                                 f"({dims} axes per example, {tokenizer.tokens_per_position} per position)")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= tokenizer.codebook_size:
            raise TokenFileError(f"{path}: token ids out of range [{lo}, {hi}] for a codebook of "
                                 f"{tokenizer.codebook_size}")
    return arr, meta

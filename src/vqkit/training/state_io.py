"""Nested training state (optimiser and scheduler state dicts, RNG states) <-> safetensors + JSON.

Tensors go into a safetensors file, everything else into a JSON skeleton that points at them; dict
keys keep their types (optimiser state is keyed by int). Nothing is ever unpickled.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..io.files import atomic_write, read_limited


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), flatten(v, tensors, f"{prefix}.{i}")] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def _key(k: Any) -> Any:
    if isinstance(k, (bool, int, float, str)):
        return [type(k).__name__, k]
    raise TypeError(f"unsupported dict key {k!r}")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_unkey(k): unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        raise ValueError(f"malformed state skeleton: {list(obj)[:3]}")
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def _unkey(k: list) -> Any:
    kind, value = k
    return {"int": int, "float": float, "str": str, "bool": bool}[kind](value)


def save_state(state: dict, directory: Path, name: str) -> list[Path]:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    st, js = directory / f"{name}.safetensors", directory / f"{name}.json"
    atomic_write(st, lambda tmp: save_file(tensors, tmp))
    atomic_write(js, json.dumps(skeleton))
    return [st, js]


def load_state(directory: Path, name: str) -> dict:
    st, js = directory / f"{name}.safetensors", directory / f"{name}.json"
    try:
        tensors = load_file(str(st))
        skeleton = json.loads(read_limited(js, 2**26, "training state file"))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{directory}: incomplete checkpoint, {Path(e.filename).name} is missing") from None
    except Exception as e:
        raise ValueError(f"{directory}: cannot read {name} state ({e})") from None
    return unflatten(skeleton, tensors)

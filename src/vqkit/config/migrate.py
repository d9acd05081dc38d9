"""Saved configs (a checkpoint's or run's config.yaml) read by today's schema with the meaning
they had when they were written."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from .schema import Config
from .tagged import chosen_kind, follow_tags, foreign_keys, merge, tagged_kinds

# Keys added after configs were first saved, with the value that reproduces what a config saved
# without them meant (a saved config is complete, so an absent key means "saved before it existed").
# Mel models only: image models never had these behaviours.
_SAVED_BEFORE = {("model", "backbone", "attention_frames"): None,   # channel attention over the whole clip
                 ("model", "refiner", "norm"): "clip"}               # refiner GroupNorm over the whole clip


def prune_kinds(cls: type, data: Any) -> Any:
    """`data` without the keys that the kinds it chose do not have: configs saved before per-kind
    configs held every kind's fields in one block, and those of other kinds were never used."""
    if not isinstance(data, dict):
        return data
    out = follow_tags(cls, data)
    for name, tp in typing.get_type_hints(cls).items():
        if not isinstance(out.get(name), dict):
            continue
        kinds = tagged_kinds(tp)
        if kinds is not None:
            kind = chosen_kind(kinds, out[name])
            if isinstance(kind, str) and kind in kinds:   # other kinds' keys go; a key no kind has stays, to be refused
                foreign = foreign_keys(kinds, kind)
                out[name] = prune_kinds(kinds[kind], {k: v for k, v in out[name].items() if k not in foreign})
        elif dataclasses.is_dataclass(tp):
            out[name] = prune_kinds(tp, out[name])
    return out


def _refiner_block(model: dict) -> dict:
    """`refiner: {enabled: false, ...}` (saved before the refiner block could be null) -> null;
    `enabled: true` -> the block without it."""
    refiner = model.get("refiner")
    if not isinstance(refiner, dict) or "enabled" not in refiner:
        return model
    rest = {k: v for k, v in refiner.items() if k != "enabled"}
    return {**model, "refiner": rest if refiner["enabled"] is not False else None}


def migrate_saved(data: dict) -> dict:
    """A saved config as the current schema reads it, with the same meaning."""
    if isinstance(data.get("model"), dict):
        data = {**data, "model": _refiner_block(data["model"])}
    data = prune_kinds(Config, data)
    disc = data.get("discriminator")
    if isinstance(disc, dict) and disc.get("kind", "mel") == "mel" and disc.get("bands") == 0:
        data = {**data, "discriminator": {**disc, "band_channels": []}}   # unused then; now refused unless []
    model = data.get("model")
    if not isinstance(model, dict) or model.get("modality", "mel") != "mel":
        return data
    out = merge(data, {})
    for path, value in _SAVED_BEFORE.items():
        node = out
        for name in path[:-1]:
            if not isinstance(node.get(name), dict):
                break
            node[name] = dict(node[name])
            node = node[name]
        else:
            node.setdefault(path[-1], value)
    return out

"""Tagged unions: a config block whose tag (`kind`, or `modality` for the model, data and loss
blocks) picks its dataclass, so the keys of the other kinds are unknown by construction.

A union such as `FSQConfig | VQConfig` is tagged when each member is a dataclass whose tag field
defaults to its own name. The tag field is `kind` unless the dataclass says otherwise (`TAG`).
A block may take its tag from a sibling block (`Config.TAG_FROM`: data and loss follow the model's
modality), so a preset never has to repeat it.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def tag_name(cls: type) -> str:
    return getattr(cls, "TAG", "kind")


def tagged_kinds(tp: Any) -> dict[str, type] | None:
    """{tag value: dataclass} when `tp` is a tagged union; None for any other type. The first
    member is the default when a block does not name its tag."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    kinds: dict[str, type] = {}
    for a in typing.get_args(tp):
        if a is type(None):
            continue
        tag = {f.name: f.default for f in dataclasses.fields(a)}.get(tag_name(a)) if dataclasses.is_dataclass(a) else None
        if not isinstance(tag, str):
            return None
        kinds[tag] = a
    return kinds or None


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def foreign_keys(kinds: dict[str, type], kind: str) -> dict[str, list[str]]:
    """The keys other kinds have and `kind` has not -> those kinds (what a block of `kind` refuses,
    and what a config saved with every kind's keys drops)."""
    own = field_names(kinds[kind])
    out: dict[str, list[str]] = {}
    for other, cls in kinds.items():
        for name in field_names(cls) - own:
            out.setdefault(name, []).append(other)
    return out


def chosen_kind(kinds: dict[str, type], block: dict) -> Any:
    """The tag value a block names, or the union's default."""
    first = next(iter(kinds.values()))
    return block.get(tag_name(first), next(iter(kinds)))


def follow_tags(cls: type, data: dict) -> dict:
    """`data` with each block of `cls.TAG_FROM` given its sibling's tag when it names none (an
    image preset's data block is image data without saying so)."""
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for name, sibling in getattr(cls, "TAG_FROM", {}).items():
        kinds, theirs = tagged_kinds(hints[name]), tagged_kinds(hints[sibling])
        block, source = out.get(name, {}), out.get(sibling, {})
        if not (kinds and theirs and isinstance(block, dict) and isinstance(source, dict)):
            continue
        tag = tag_name(next(iter(kinds.values())))
        if tag not in block:
            out[name] = {tag: chosen_kind(theirs, source), **block}
    return out


def merge(base: dict, update: dict) -> dict:
    """update over base, recursively. A block whose tag changes is replaced, not merged: the keys
    of the old kind (a preset's FSQ levels) do not belong to the new one (model.quantizer.kind=vq).
    A block given over a null one (a preset without a refiner) is taken as it is."""
    out = dict(base)
    for k, v in update.items():
        old = out.get(k)
        both = isinstance(v, dict) and isinstance(old, dict)
        changes = both and any(t in v and t in old and v[t] != old[t] for t in ("kind", "modality"))
        out[k] = merge(old, v) if both and not changes else v
    return out

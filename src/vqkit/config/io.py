"""Strict config IO: dict <-> dataclasses, YAML files, dotted overrides, presets."""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..io.files import TooLargeError, atomic_write, read_limited
from .migrate import migrate_saved, prune_kinds
from .schema import Config, ConfigError
from .tagged import chosen_kind, field_names, follow_tags, foreign_keys, merge, tag_name, tagged_kinds  # noqa: F401

PRESET_DIR = Path(__file__).parent.parent / "presets"
YAML_LIMIT = 2**20        # bytes: a full config is a few KB
YAML_VALUES = 100_000     # values after anchors/aliases are expanded (an alias bomb stays small on disk)


# ---- dict <-> dataclass, strict -------------------------------------------------------------

def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{where or 'config'}: keys must be names, got {bad[0]!r}")
    data = follow_tags(cls, data)
    hints = typing.get_type_hints(cls)
    names = field_names(cls)
    unknown = sorted(set(data) - names)
    prefix = where + "." if where else ""
    for name in unknown:
        if name in getattr(cls, "REMOVED", {}):   # a key that once existed: say what replaced it
            raise ConfigError(f"{prefix}{name}: no longer a key; {cls.REMOVED[name]}")
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f"did you mean {prefix}{close[0]}? " if close else ""
        name = unknown[0] if unknown[0].isprintable() and unknown[0].strip() else repr(unknown[0])   # "\n" stays one line
        raise ConfigError(f"{prefix}{name}: unknown key ({hint}valid keys here: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _tagged(kinds: dict[str, type], value: Any, key: str) -> Any:
    """The dataclass the block's tag names, built from value; a key that only another kind has is
    refused naming that kind (it would otherwise be accepted and ignored)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    tag, kind = tag_name(next(iter(kinds.values()))), chosen_kind(kinds, value)
    if not isinstance(kind, str) or kind not in kinds:
        raise ConfigError(f"{key}.{tag}: unknown {tag} {kind!r}; available: {', '.join(kinds)}")
    foreign = foreign_keys(kinds, kind)
    for name in value:
        if name in foreign:
            raise ConfigError(f"{key}.{name}: applies to {tag} {' / '.join(map(repr, foreign[name]))}, not {kind!r} "
                              f"(keys of {tag} {kind!r}: {', '.join(sorted(field_names(kinds[kind])))})")
    return from_dict(kinds[kind], value, key)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    kinds = tagged_kinds(tp)
    if kinds is not None:
        return _tagged(kinds, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        number = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:   # strings too: YAML 1.1 reads 3e-4 (no dot) as a string
                number = float(value)
            except (ValueError, OverflowError):
                pass
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        if isinstance(value, int) and number != value:   # 2**53 + 1 would silently become 2**53
            raise ConfigError(f"{key}: {value} is too large to be held exactly; give it as a float (e.g. {number:.6g})")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def yaml_problem(e: BaseException) -> str:
    """A YAML error as one line with its position: 'line 3, column 5: mapping values are not
    allowed here' (PyYAML's own text spans several lines and names '<unicode string>')."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
    context = getattr(e, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{context + ': ' if context else ''}{problem}"


def read_yaml(path: Path, what: str = "config file") -> dict:
    """A YAML file's top-level mapping ({} when empty); every failure is a one-line ConfigError
    naming the file. safe_load only: a YAML file never constructs Python objects."""
    path = Path(path)
    try:
        text = read_limited(path, YAML_LIMIT, what).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except TooLargeError as e:
        raise ConfigError(str(e)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file") from None
    except OSError as e:   # a directory, no permission, ...
        raise ConfigError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except Exception as e:  # YAMLError, and the ValueError/KeyError/... of tags like !!int abc
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    if _count_values(data, YAML_VALUES) > YAML_VALUES:
        raise ConfigError(f"{path}: more than {YAML_VALUES:,} values once its aliases are expanded; "
                          f"a {what} has a few hundred")
    return data


def _count_values(node: Any, budget: int) -> int:
    """Values in a YAML document as a reader of it sees them (aliases expanded), counted only up
    to just past `budget`, so a 'billion laughs' file costs no more than the budget to check."""
    seen, stack = 0, [node]
    while stack and seen <= budget:
        node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return seen


def parse_overrides(overrides: list[str]) -> dict:
    """['train.steps=10', 'model.refiner.mode=shared'] -> nested dict (values parsed as YAML)."""
    nested: dict = {}
    made: set[int] = set()   # blocks that dotted keys made (a mapping given as a value may be replaced)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.steps=100")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        except Exception as e:  # tags such as !!int abc raise ValueError, KeyError, ...
            raise ConfigError(f"override {item!r}: cannot read the value ({yaml_problem(e)})") from None
        node = nested
        parts = key.strip().split(".")
        if any(not p.strip() for p in parts):
            raise ConfigError(f"override {item!r}: the key {key.strip()!r} has an empty name in it, e.g. train.steps=100")
        for i, p in enumerate(parts[:-1]):
            if p not in node:
                node[p] = {}
                made.add(id(node[p]))
            node = node[p]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:i + 1])} was already set to a value")
        if isinstance(node.get(parts[-1]), dict) and id(node[parts[-1]]) in made:
            raise ConfigError(f"override {item!r}: {key} was already given nested keys")
        node[parts[-1]] = value
    return nested


def available_presets(kind: str = "tokenizer") -> list[str]:
    return sorted(p.stem for p in _preset_dir(kind).glob("*.yaml"))


def _preset_dir(kind: str) -> Path:
    return PRESET_DIR if kind == "tokenizer" else PRESET_DIR / "priors"


def load_config(preset: str | None = None, path: str | Path | None = None,
                overrides: list[str] | None = None, schema: type = Config, saved: bool = False) -> Any:
    """Defaults <- preset <- YAML file <- overrides, validated. schema: Config (tokenizers) or
    PriorConfig (token priors, presets in presets/priors/). saved: `path` is a config vqkit wrote
    (a run's config.yaml), read with old layouts migrated."""
    kind = "tokenizer" if schema is Config else "prior"
    data: dict = {}
    if preset is not None:
        p = _preset_dir(kind) / f"{preset}.yaml"
        if not p.exists():
            raise ConfigError(f"unknown preset {preset!r} ({kind}s); available: {', '.join(available_presets(kind))}")
        data = merge(data, read_yaml(p))
    if path is not None:
        raw = read_yaml(Path(path))
        data = merge(data, (migrate_saved(raw) if schema is Config else prune_kinds(schema, raw)) if saved else raw)
    if overrides:
        data = merge(data, parse_overrides(overrides))
    where = str(path) if path is not None else (f"preset {preset}" if preset else "")
    try:
        cfg = from_dict(schema, data)
        return cfg.validate()
    except ConfigError as e:
        where = _override_of(str(e), overrides or []) or where
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def _override_of(message: str, overrides: list[str]) -> str | None:
    """The command-line override that set the key an error names ('train.stpes: unknown key' ->
    "override 'train.stpes=3'"), so the message points at what the user typed, not at the preset."""
    key = message.split(":", 1)[0].split("[", 1)[0].strip()
    for item in reversed(overrides):
        name = item.split("=", 1)[0].strip()
        if "=" in item and (key == name or key.startswith(name + ".") or name.startswith(key + ".")):
            return f"override {item!r}"
    return None


def config_from_dict(data: dict, where: str = "", saved: bool = False) -> Config:
    """saved: a config written by vqkit (a checkpoint's or run's config.yaml): migrate old layouts."""
    try:
        return from_dict(Config, migrate_saved(data) if saved else data).validate()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def save_config(cfg: Any, path: str | Path) -> None:
    atomic_write(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

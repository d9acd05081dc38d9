"""Strict typed configuration: presets, unknown keys, wrong types, out-of-range values, malformed
files, dotted overrides, save/load round trip, and property tests that junk only ever produces
ConfigError.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vqkit.config import (PRESET_DIR, Config, ConfigError, available_presets, config_from_dict,
                          load_config, parse_overrides, save_config, tagged_kinds)


def leaf_paths(cls: type = Config, prefix: str = "") -> dict[str, typing.Any]:
    """Every leaf key of the config schema -> its type, found by walking the dataclasses."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        kinds = tagged_kinds(hints[f.name])
        if kinds is not None:   # a per-kind block: the leaves of every kind
            for kind_cls in kinds.values():
                out.update(leaf_paths(kind_cls, key + "."))
        elif dataclasses.is_dataclass(hints[f.name]):
            out.update(leaf_paths(hints[f.name], key + "."))
        elif optional_block(hints[f.name]):   # a block that may be null (model.refiner): both
            out[key] = hints[f.name]
            out.update(leaf_paths(optional_block(hints[f.name]), key + "."))
        else:
            out[key] = hints[f.name]
    return out


def optional_block(tp) -> type | None:
    """The dataclass of `SomeConfig | None`, else None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in typing.get_args(tp) and dataclasses.is_dataclass(args[0]) else None


LEAVES = leaf_paths()


def get_path(cfg: Config, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def flatten(d: dict, prefix: str = "") -> dict[str, typing.Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---- presets ------------------------------------------------------------------------------------

def test_presets_are_listed():
    files = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    assert files and available_presets() == files
    assert {"mqgan-refiner", "mqgan-44k"} <= set(files)


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_loads_validates_and_is_honoured(preset):
    cfg = load_config(preset=preset)
    assert isinstance(cfg, Config)
    assert cfg.validate() is cfg
    raw = yaml.safe_load((PRESET_DIR / f"{preset}.yaml").read_text())
    flat = flatten(raw)
    assert len(flat) > 20
    for key, value in flat.items():
        assert key in LEAVES, f"preset key {key} not in the schema"
        assert get_path(cfg, key) == value, key
    assert cfg.name == preset
    # the preset is a complete description: saving and reloading changes nothing
    assert config_from_dict(cfg.to_dict()) == cfg


def test_defaults_validate():
    assert Config().validate() == load_config()


# ---- rejections -------------------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("trian.steps=3", "trian"),
    ("steps=3", "steps"),
    ("model.refiner.mdoe=shared", "model.refiner.mdoe"),
    ("model.mel.nmels=40", "model.mel.nmels"),
    ("loss.gan_weight=2", "loss.gan_weight"),
])
def test_unknown_key_names_the_key(override, key):
    with pytest.raises(ConfigError, match="unknown key") as err:
        load_config(overrides=[override])
    assert key in str(err.value)


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model:\n  refiner:\n    mdoe: shared\n")
    with pytest.raises(ConfigError) as err:
        load_config(path=path)
    assert str(path) in str(err.value) and "model.refiner.mdoe" in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("train.steps=ten", "train.steps"),
    ("train.steps=1.5", "train.steps"),
    ("train.steps=true", "train.steps"),          # a bool is not an integer
    ("model.quantizer.levels=[8, a]", "model.quantizer.levels"),
    ("model.quantizer.levels=8", "model.quantizer.levels"),
    ("model.backbone.attention=yes please", "model.backbone.attention"),
    ("model.backbone.attention=1", "model.backbone.attention"),
    ("optim.lr=fast", "optim.lr"),
    ("optim.lr=false", "optim.lr"),
    ("model.refiner.mode=3", "model.refiner.mode"),
    ("model.mel.fmax=high", "model.mel.fmax"),
    ("model=[1, 2]", "model"),
    ("train={steps: x}", "train.steps"),
])
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert key in str(err.value)


def test_wrong_list_item_names_index():
    with pytest.raises(ConfigError, match=re.escape("model.quantizer.levels[1]")):
        load_config(overrides=['model.quantizer.levels=[8, "a"]'])


@pytest.mark.parametrize("override, key", [
    ("model.backbone.downsample=3", "model.backbone.downsample"),
    ("model.backbone.downsample=16", "model.backbone.downsample"),
    ("model.refiner.mode=foo", "model.refiner.mode"),
    ("model.quantizer.levels=[1, 5]", "model.quantizer.levels"),
    ("model.quantizer.levels=[]", "model.quantizer.levels"),
    ("model.quantizer.kind=rvq", "model.quantizer.kind"),
    ("model.backbone.kernel_size=4", "model.backbone.kernel_size"),
    ("model.mel.fmax=20000", "mel.fmax"),          # above Nyquist at 22.05 kHz
    ("model.mel.win_length=2048", "mel.win_length"),
    ("model.mel.mel_scale=bark", "mel.mel_scale"),
    ("loss.gan=-1", "loss.gan"),
    ("loss.lecam_decay=1.0", "loss.lecam_decay"),
    ("train.steps=0", "train.steps"),
    ("train.precision=fp16", "train.precision"),
    ("discriminator.bands=81", "discriminator.bands"),
    ("data.segment_frames=4", "data.segment_frames"),
    ("optim.betas=[0.9]", "optim.betas"),
])
def test_out_of_range_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert key in str(err.value)


@pytest.mark.parametrize("override, key", [("model.mel.fmax=20000", "model.mel.fmax"),
                                           ("model.mel.win_length=2048", "model.mel.win_length")])
def test_mel_errors_name_the_full_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert key in str(err.value)


@pytest.mark.parametrize("overrides, key", [(["model.backbone.kernel_size=-1"], "model.backbone.kernel_size"),
                                            (["model.mel.n_mels=0", "discriminator.bands=0"], "model.mel.n_mels"),
                                            (["optim.lr=.inf"], "optim.lr")])
def test_out_of_range_sizes_not_checked(overrides, key):
    with pytest.raises(ConfigError, match=rf"^override '{key}=[^']*': {key}: "):
        load_config(overrides=overrides)


# ---- files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "model: [unclosed\n",
    "train:\n  steps: 1\n bad_indent: 2\n",
    "a: b: c\n",
    "{{{{\n",
])
def test_malformed_yaml_names_the_file(tmp_path, text):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path=path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n"])
def test_non_mapping_yaml_names_the_file(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="mapping") as err:
        load_config(path=path)
    assert str(path) in str(err.value)


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(path=tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="unknown preset") as err:
        load_config(preset="no-such-preset")
    for p in available_presets():
        assert p in str(err.value)


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path=path) == Config()


def test_binary_file_names_the_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x01model: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path=path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("source", ["file", "override"])
def test_non_string_keys(tmp_path, source):
    path = tmp_path / "keys.yaml"
    where = re.escape(f"{path}: config") if source == "file" else "override 'model={1: 2, a: 3}': model"
    with pytest.raises(ConfigError, match=f"^{where}: keys must be names, got 1$"):
        if source == "file":
            path.write_text("1: 2\nfoo: 3\n")
            load_config(path=path)
        else:
            load_config(overrides=["model={1: 2, a: 3}"])


def test_save_load_round_trip(tmp_path):
    cfg = load_config(preset="mqgan-44k", overrides=[
        "model.mel.fmax=null", "model.refiner.hidden_bins=5", "model.refiner.mode=shared",
        "train.steps=17", "optim.betas=[0.8, 0.95]", "data.max_seconds=null", "name=round-trip"])
    path = tmp_path / "saved.yaml"
    save_config(cfg, path)
    loaded = load_config(path=path)
    assert loaded == cfg
    assert loaded.model.mel.fmax is None and loaded.model.refiner.hidden_bins == 5
    assert loaded != Config()
    # and the defaults
    save_config(Config(), path)
    assert load_config(path=path) == Config()


# ---- overrides ------------------------------------------------------------------------------------

def test_overrides_are_applied_and_typed():
    cfg = load_config(overrides=[
        "train.steps=10", "model.refiner.mode=shared", "model.backbone.channels=[32, 48]",
        "model.mel.fmin=10", "optim.lr=1.0e-4", "model.mel.fmax=null", "model.backbone.causal_decoder=true",
        "name=my run=2"])
    assert cfg.train.steps == 10 and type(cfg.train.steps) is int
    assert cfg.model.refiner.mode == "shared"
    assert cfg.model.backbone.channels == [32, 48]
    assert cfg.model.mel.fmin == 10.0 and type(cfg.model.mel.fmin) is float
    assert cfg.optim.lr == pytest.approx(1e-4) and type(cfg.optim.lr) is float
    assert cfg.model.mel.fmax is None
    assert cfg.model.backbone.causal_decoder is True
    assert cfg.name == "my run=2"                     # split at the first '='
    # untouched values keep their defaults
    assert cfg.train.batch_size == Config().train.batch_size


def test_precedence_defaults_preset_file_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train: {steps: 7}\nmodel: {refiner: {base_channels: 12}}\n")
    cfg = load_config(preset="mqgan-44k", path=path)
    assert cfg.train.steps == 7 and cfg.model.refiner.base_channels == 12
    assert cfg.model.mel.n_mels == 128                       # from the preset, not replaced by the file
    assert cfg.model.refiner.channel_mults == [1, 2, 4, 8]   # nested siblings kept (deep merge)
    assert cfg.train.batch_size == 16 and cfg.train.precision == "bf16"
    cfg = load_config(preset="mqgan-44k", path=path, overrides=["train.steps=9"])
    assert cfg.train.steps == 9 and cfg.model.refiner.base_channels == 12


def test_parse_overrides_basic():
    assert parse_overrides(["train.steps=10", "model.refiner.mode=shared", "a.b.c=[1, 2]", "x="]) == {
        "train": {"steps": 10}, "model": {"refiner": {"mode": "shared"}}, "a": {"b": {"c": [1, 2]}}, "x": ""}
    assert parse_overrides(["train.steps=1", "train.steps=2"]) == {"train": {"steps": 2}}
    assert parse_overrides(["name=[unclosed"]) == {"name": "[unclosed"}    # unparsable YAML stays text
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.steps"])


@pytest.mark.parametrize("items, key", [(["train=1", "train.steps=2"], "train"), (["a.b=1", "a.b.c=2"], "a.b")])
def test_parse_overrides_scalar_then_nested(items, key):
    with pytest.raises(ConfigError, match=f"^override '{items[1]}': {key} was already set to a value$"):
        parse_overrides(items)


YAML_ESCAPES = ["2020-13-01", "!!int abc", "!!float abc", "!!bool maybe", "!!timestamp x", "!!int"]


@pytest.mark.parametrize("source", ["override", "file"])
@pytest.mark.parametrize("value", YAML_ESCAPES)
def test_unconstructible_yaml_value(tmp_path, source, value):
    where = (re.escape(f"override 'train.steps={value}': cannot read the value (") if source == "override"
             else re.escape(f"{tmp_path / 'exp.yaml'}: not valid YAML: "))
    with pytest.raises(ConfigError, match=f"^{where}"):
        if source == "override":
            load_config(overrides=[f"train.steps={value}"])
        else:
            path = tmp_path / "exp.yaml"
            path.write_text(f"train:\n  steps: {value}\n")
            load_config(path=path)


def test_override_huge_integer_for_float():
    with pytest.raises(ConfigError, match=r"^override 'optim.lr=10+': optim.lr: expected a finite number"):
        load_config(overrides=["optim.lr=1" + "0" * 400])


# ---- property tests ----------------------------------------------------------------------------

def has_prefix_conflict(paths: list[tuple[str, ...]]) -> bool:
    """One path a proper prefix of another (a value and nested keys under the same name):
    parse_overrides rejects that as ambiguous."""
    return any(len(a) < len(b) and b[: len(a)] == a for a in paths for b in paths)


def yaml_escapes(text: str) -> bool:
    """True when yaml.safe_load(text) raises something other than YAMLError (e.g. '!!int abc'):
    parse_overrides rejects such a value."""
    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    except Exception:
        return True
    return False



PART = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True)
# (YAML text, the value it must parse to); words are prefixed so YAML 1.1 never reads them as bools
SIMPLE_VALUE = st.one_of(
    st.integers(-10**6, 10**6).map(lambda i: (str(i), i)),
    st.booleans().map(lambda b: ("true" if b else "false", b)),
    st.from_regex(r"w[a-z0-9_]{0,8}", fullmatch=True).map(lambda w: (w, w)),
    st.lists(st.integers(0, 99), max_size=4).map(lambda xs: (str(xs), xs)),
    st.just(("null", None)),
    st.just(("", "")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(PART, min_size=1, max_size=3).map(tuple), SIMPLE_VALUE), max_size=6))
def test_parse_overrides_builds_the_nested_dict(items):
    paths = [p for p, _ in items]
    overrides = [f"{'.'.join(p)}={text}" for p, (text, _) in items]
    if has_prefix_conflict(paths):
        with pytest.raises(ConfigError, match="already"):
            parse_overrides(overrides)
        return
    expected: dict = {}
    for path, (_, value) in items:                      # independent model: last assignment wins
        node = expected
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    assert parse_overrides(overrides) == expected


JUNK_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.lists(st.tuples(JUNK_TEXT, st.sampled_from(["=", "=", "=", "=", ""]), JUNK_TEXT), max_size=5))
def test_parse_overrides_junk_gives_dict_or_config_error(items):
    overrides = [f"{k}{eq}{v}" for k, eq, v in items]
    paths = [tuple(o.split("=", 1)[0].strip().split(".")) for o in overrides if "=" in o]
    try:
        result = parse_overrides(overrides)
    except ConfigError:
        # the documented reasons: no '=', an empty key name, a value and nested keys under one name,
        # an unreadable value
        assert (any("=" not in o for o in overrides) or any(not p.strip() for path in paths for p in path)
                or has_prefix_conflict(paths)
                or any(yaml_escapes(o.split("=", 1)[1]) for o in overrides if "=" in o))
        event("rejected")
        return
    event("parsed")
    assert isinstance(result, dict)
    assert all("=" in o for o in overrides)
    if overrides:                                        # the last override is always present
        node = result
        for part in paths[-1]:
            assert isinstance(node, dict) and part in node
            node = node[part]


YAML_SNIPPETS = st.sampled_from([
    "null", "~", "true", "false", "yes", "0", "-1", "1.5", "1e-4", ".nan", ".inf", "-.inf", "[]", "{}",
    "[1, 2]", "[8, 'a']", "[[1]]", "{a: 1}", "{steps: 3}", "''", "\"\"", "!!binary aGk=", "!!set {a}",
    "&a [*a]", "2001-12-14", "!!python/name:os.system", "[unclosed", "{a: [1, {b: 2}]}", "0x1F",
    "1_000", "0o17", "2.5e+3", "- x", "a: b", "'quoted'", "shared", "isolated", "resnet1d", "fsq",
])
NUMBER = st.one_of(st.integers(-2**64, 2**64).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
KEYS = sorted(LEAVES) + ["model", "model.mel", "train", "loss", "name.x", "model.refiner.mdoe", "trian", ""]


PLAUSIBLE = st.one_of(st.integers(0, 64).map(str), st.sampled_from(
    ["true", "false", "0.5", "0.9", "[8, 5, 5]", "[16, 32]", "[0.9, 0.99]", "null", "bf16", "cpu", "slaney"]))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, YAML_SNIPPETS, NUMBER, JUNK_TEXT)),
                min_size=1, max_size=4))
def test_load_config_junk_overrides_raise_only_config_error(items):
    try:
        cfg = load_config(overrides=[f"{k}={v}" for k, v in items])
    except ConfigError:
        event("rejected")
        return
    event("accepted")
    # accepted: the result is valid and every leaf override was honoured
    assert cfg.validate() is cfg
    last = {}
    for k, v in items:
        last[k] = v
    for key, text in last.items():
        if key in LEAVES and not any(o != key and o.startswith(key + ".") or key.startswith(o + ".")
                                     for o in last):
            try:
                expected = yaml.safe_load(text) if text != "" else ""
            except yaml.YAMLError:
                expected = text
            got = get_path(cfg, key)
            if isinstance(expected, str) and isinstance(got, float):
                expected = float(expected)               # float fields accept number-like text
            if isinstance(expected, float) and math.isnan(expected):
                assert math.isnan(got)
            else:
                assert got == expected, key


def test_an_unknown_key_that_is_not_printable_stays_on_one_line():
    """Found by the property test: a key named '\\n' made a two-line error."""
    from vqkit.config import config_from_dict

    with pytest.raises(ConfigError, match=r"^x\.yaml: '\\n': unknown key \(valid keys here: data,") as e:
        config_from_dict({"\n": 1}, where="x.yaml")
    assert "\n" not in str(e.value)


def test_an_integer_a_float_cannot_hold_is_refused():
    """Hypothesis found it: data.max_seconds=9007199254740993 was read as 9007199254740992.0."""
    with pytest.raises(ConfigError, match=r"data.max_seconds: 9007199254740993 is too large to be held exactly"):
        load_config(overrides=["data.max_seconds=9007199254740993"])
    assert load_config(overrides=["data.max_seconds=9007199254740992"]).data.max_seconds == 2.0 ** 53


def test_an_override_given_a_mapping_can_be_given_again():
    """Hypothesis found it: `0=?` (YAML reads `?` as a mapping) and then `0=` was refused as if
    dotted keys had been given under 0; a later value replaces an earlier one."""
    assert parse_overrides(["0=?", "0="]) == {"0": ""}
    assert parse_overrides(["model.refiner={}", "model.refiner=null"]) == {"model": {"refiner": None}}
    with pytest.raises(ConfigError, match=r"override 'model.refiner=null': model.refiner was already given nested keys"):
        parse_overrides(["model.refiner.mode=shared", "model.refiner=null"])

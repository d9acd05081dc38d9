"""Property tests for the two parsers of untrusted files: the token reader and the config parser.

Whatever they are given, they return a valid result or raise their own error (TokenFileError,
ConfigError) with a one-line message; never another exception. Where the right answer is easy to
state (an integer array in range, a sidecar naming this tokenizer, a schema-shaped dict), the test
also checks that the decision itself is right, not only that nothing crashed. More byte- and
override-level properties live in test_tokens_io.py and test_config.py.
"""
from __future__ import annotations

import copy
import inspect
import json
import math

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import TINY
from vqkit.config import PRESET_DIR, Config, ConfigError, config_from_dict, load_config, save_config
from vqkit.models.tokenizer import Tokenizer
from vqkit.tokens_io import FORMAT, TokenFileError, load_tokens, save_tokens, sidecar_path

pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
MMAP = [False] + ([True] if "mmap" in inspect.signature(load_tokens).parameters else [])


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(load_config(preset="mqgan-refiner", overrides=TINY)).eval()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("props")


def _load(path, tokenizer, mmap):
    return load_tokens(path, tokenizer, **({"mmap": True} if mmap else {}))


# ---- token reader: arrays ----------------------------------------------------------------------------

DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, ">i4", "<i2",
          np.bool_, np.float16, np.float32, np.float64, np.complex64, "datetime64[s]", "U3", "S2", "V4"]


@st.composite
def token_arrays(draw):
    """Arrays of every dtype and rank (0-d, empty, up to 32 axes) whose values cluster around the
    codebook's edges [0, 1000), so in-range, out-of-range and negative ids all come up."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    ndim = draw(st.one_of(st.integers(0, 3), st.integers(4, 32)))
    shape = tuple(draw(st.lists(st.integers(0 if ndim < 4 else 1, 4 if ndim < 4 else 1), min_size=ndim, max_size=ndim)))
    n = int(np.prod(shape))
    values = np.array(draw(st.lists(st.one_of(st.integers(0, 999), st.sampled_from([-1, -2**31, 1000, 2**40])),
                                     min_size=n, max_size=n)), dtype=np.int64)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(values, max(info.min, -2**63), min(info.max, 2**63 - 1))
    with np.errstate(over="ignore", invalid="ignore"):   # 2**40 as float16 is inf: a fine wrong array
        return values.astype(dtype).reshape(shape)


def _npy(path, array):
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


@settings(max_examples=200, **SETTINGS)
@given(array=token_arrays(), with_tokenizer=st.booleans(), mmap=st.sampled_from(MMAP))
def test_token_arrays_are_accepted_exactly_when_valid(tok, workdir, array, with_tokenizer, mmap):
    path = save_tokens(workdir / "arr.npy", np.array([1, 2]), tok)      # a valid sidecar for `tok`
    _npy(path, array)
    integer = np.issubdtype(array.dtype, np.integer)
    valid = integer and array.size > 0 and (array.ndim in (1, 2) if with_tokenizer else 1 <= array.ndim <= 4)
    if valid and with_tokenizer:
        valid = 0 <= int(array.min()) and int(array.max()) < tok.codebook_size
    try:
        arr, meta = _load(path, tok if with_tokenizer else None, mmap)
    except TokenFileError as e:
        event("refused")
        assert not valid and "\n" not in str(e) and str(path) in str(e)
        return
    event("loaded")
    assert valid and arr.dtype == array.dtype and np.array_equal(arr, array)
    assert meta["tokenizer_id"] == tok.tokenizer_id


# ---- token reader: sidecars --------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=12)
META_KEYS = ["format", "tokenizer_id", "tokenizer_name", "modality", "codebook_size", "shape", "source"]


@st.composite
def sidecars(draw, valid_meta):
    """A sidecar's text: the right one edited (values replaced, keys dropped), any JSON, or any text."""
    kind = draw(st.sampled_from(["edited", "edited", "json", "text"]))
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "json":
        return json.dumps(draw(JSON))
    meta = dict(valid_meta)
    for key in draw(st.lists(st.sampled_from(META_KEYS), max_size=3)):
        meta.pop(key, None)
    for key, value in draw(st.dictionaries(st.sampled_from(META_KEYS + ["junk"]),
                                           JSON | st.sampled_from([FORMAT, valid_meta["tokenizer_id"]]), max_size=2)).items():
        meta[key] = value
    return json.dumps(meta)


@pytest.fixture(scope="module")
def token_file(tok, workdir):
    """fresh() rewrites a valid token file + sidecar: every example damages one or the other."""
    path = workdir / "side.npy"

    def fresh():
        save_tokens(path, np.array([3, 1, 4]), tok)
        return path, json.loads(sidecar_path(path).read_text())
    return fresh


@settings(max_examples=200, **SETTINGS)
@given(data=st.data(), with_tokenizer=st.booleans())
def test_sidecars_are_accepted_exactly_when_they_name_the_tokenizer(tok, token_file, data, with_tokenizer):
    path, valid_meta = token_file()
    text = data.draw(sidecars(valid_meta))
    sidecar_path(path).write_text(text)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    valid = isinstance(parsed, dict) and parsed.get("format") == FORMAT and (
        not with_tokenizer or parsed.get("tokenizer_id") == tok.tokenizer_id)
    try:
        arr, meta = load_tokens(path, tok if with_tokenizer else None)
    except TokenFileError as e:
        event("refused")
        assert not valid and "\n" not in str(e)
        return
    event("loaded")
    assert valid and meta == parsed and arr.tolist() == [3, 1, 4]


@settings(max_examples=100, **SETTINGS)
@given(payload=st.binary(max_size=200), prefix=st.sampled_from([b"", b"\x93NUMPY", b"PK\x03\x04", b"\x80\x04"]),
       mmap=st.sampled_from(MMAP))
def test_any_bytes_give_tokens_or_token_error(tok, token_file, payload, prefix, mmap):
    """The zip (npz) and pickle prefixes too, which test_tokens_io's byte fuzzer leaves out."""
    path, _ = token_file()
    path.write_bytes(prefix + payload)
    try:
        arr, _ = _load(path, tok, mmap)
    except TokenFileError:
        return
    assert np.issubdtype(arr.dtype, np.integer) and 0 <= arr.min() and arr.max() < tok.codebook_size


@pytest.mark.parametrize("sidecar", ["deeply nested", "a directory"])
def test_sidecar_failures_are_token_errors(tok, token_file, sidecar):
    path, _ = token_file()
    side = sidecar_path(path)
    if sidecar == "a directory":
        side.unlink()
        side.mkdir()
    else:
        side.write_text("[" * 100_000)
    try:
        with pytest.raises(TokenFileError, match=f"^{side}: (not a valid token sidecar .RecursionError|cannot read the "
                           "token sidecar)"):
            load_tokens(path, tok)
    finally:
        if side.is_dir():
            side.rmdir()


# ---- config parser: dicts ------------------------------------------------------------------------------

def leaf_paths(d: dict, prefix=()) -> list[tuple[str, ...]]:
    out = []
    for k, v in d.items():
        out += leaf_paths(v, prefix + (k,)) if isinstance(v, dict) else [prefix + (k,)]
    return out


BASES = [Config().to_dict()] + [load_config(preset=p.stem).to_dict() for p in sorted(PRESET_DIR.glob("*.yaml"))]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70), st.integers(), st.floats(), st.text(max_size=6),
    st.sampled_from(["fsq", "vq", "mel", "image", "shared", "isolated", "resnet1d", "resnet2d", "vit", "patchgan",
                     "hinge", "bf16", "fp32", "htk", "slaney", "window", "3e-4", "inf"]),
    st.lists(st.integers(-1, 20), max_size=4), st.lists(st.floats(-1, 2), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2), st.binary(max_size=3),
)


@st.composite
def config_dicts(draw):
    """A preset's dict with a few leaves replaced, subtrees replaced by junk or junk keys added; or junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(JSON, VALUES))
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    paths = leaf_paths(data)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        cut = draw(st.sampled_from([len(path)] * 4 + list(range(1, len(path)))))   # mostly the leaf itself
        node = data
        for key in path[: cut - 1]:
            if not isinstance(node.get(key), dict):    # an earlier edit put a leaf here
                node[key] = {}
            node = node[key]
        key = path[cut - 1] if draw(st.integers(0, 7)) else draw(st.text(min_size=1, max_size=5))
        node[key] = draw(VALUES)
    return data


def get_path(obj, path):
    for key in path:
        obj = getattr(obj, key)
    return obj


@settings(max_examples=200, **SETTINGS)
@given(data=config_dicts())
def test_config_dicts_give_config_or_config_error(workdir, data):
    try:
        cfg = config_from_dict(data, where="fuzz.yaml")
    except ConfigError as e:
        event("rejected")
        assert str(e).startswith("fuzz.yaml: ") and "\n" not in str(e)
        return
    event("accepted")
    assert isinstance(cfg, Config) and cfg.validate() is cfg
    for path in leaf_paths(data):                      # every value given is the value used
        want, got = _dig(data, path), get_path(cfg, path)
        if isinstance(got, float) and isinstance(want, (int, str)) and not isinstance(want, bool):
            want = float(want)                         # float fields take integers and number-like text
        assert got == want or (isinstance(got, float) and math.isnan(got) and math.isnan(want)), path
    save_config(cfg, workdir / "round.yaml")           # and what is accepted survives a round trip
    assert load_config(path=workdir / "round.yaml") == cfg


def _dig(d: dict, path):
    for key in path:
        d = d[key]
    return d


# ---- config parser: YAML files ---------------------------------------------------------------------

PRESET_TEXT = [p.read_text() for p in sorted(PRESET_DIR.glob("*.yaml"))]


@st.composite
def yaml_texts(draw):
    """A preset's text with characters replaced, inserted or cut; YAML dumped from junk; or any text."""
    kind = draw(st.sampled_from(["mutated", "mutated", "dumped", "text"]))
    if kind == "text":
        return draw(st.text(max_size=60))
    if kind == "dumped":
        return yaml.safe_dump(draw(st.one_of(config_dicts(), JSON)))
    text = draw(st.sampled_from(PRESET_TEXT))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        new = draw(st.sampled_from([":", "-", "[", "{", "\t", " ", "\n", "!!", "&a", "*a", "#", "'", "x", "0", ""]))
        cut = draw(st.integers(0, 3))
        text = text[:i] + new + text[i + cut:]
    return text


@settings(max_examples=150, **SETTINGS)
@given(text=yaml_texts())
def test_yaml_files_give_config_or_config_error_naming_the_file(workdir, text):
    path = workdir / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = load_config(path=path)
    except ConfigError as e:
        event("rejected")
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
        return
    event("accepted")
    assert isinstance(cfg, Config) and cfg.validate() is cfg

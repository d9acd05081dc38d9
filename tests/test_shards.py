"""vqkit.data.shards: many variable-shape arrays across shard files, read back as read-only memmaps."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from vqkit.data.shards import ALIGN, INDEX, ShardedArrays, ShardStoreError, ShardWriter


def random_arrays(rng: np.random.Generator, dtype, n: int) -> dict[str, np.ndarray]:
    out = {}
    for i in range(n):
        ndim = int(rng.integers(0, 4))
        shape = tuple(int(s) for s in rng.integers(0, 9, size=ndim))
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            a = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
        else:
            a = rng.standard_normal(shape).astype(dtype)
        out[f"item/{i:03d}"] = a
    return out


def build(directory, arrays: dict[str, np.ndarray], dtype, shard_bytes: int, meta=None) -> ShardedArrays:
    with ShardWriter(directory, dtype, shard_bytes=shard_bytes, meta=meta) as w:
        for k, a in arrays.items():
            w.add(k, a)
        return w.close()


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int16, np.int64, np.uint8, np.float64])
def test_round_trip_across_shards(tmp_path, dtype):
    arrays = random_arrays(np.random.default_rng(1), dtype, 60)
    store = build(tmp_path / "s", arrays, dtype, shard_bytes=500, meta={"what": "test", "n": [1, 2]})
    shard_files = sorted((tmp_path / "s").glob("shard-*.bin"))
    assert len(shard_files) >= 3
    for reopened in (store, ShardedArrays.open(tmp_path / "s")):
        assert len(reopened) == len(arrays) and reopened.keys == list(arrays)
        assert reopened.shapes == [a.shape for a in arrays.values()]
        assert reopened.meta == {"what": "test", "n": [1, 2]} and reopened.dtype == np.dtype(dtype)
        for got, want in zip(reopened, arrays.values()):
            assert got.dtype == np.dtype(dtype) and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
    index = json.loads((tmp_path / "s" / INDEX).read_text())
    assert index["format"] == "vqkit-sharded-arrays" and index["version"] == 1
    assert all(o % ALIGN == 0 for o in index["offsets"])
    assert index["shard_bytes"] == [f.stat().st_size for f in shard_files]


def test_items_are_read_only_memmap_views(tmp_path):
    arrays = {f"k{i}": np.full((3, 10 + i), i, np.float32) for i in range(5)}
    store = build(tmp_path / "s", arrays, np.float32, shard_bytes=300)
    item = store[2]
    assert isinstance(item, np.memmap) and not item.flags.writeable
    with pytest.raises(ValueError):
        item[0, 0] = 1.0
    assert store[-1].shape == (3, 14) and float(store[-1][0, 0]) == 4.0
    with pytest.raises(IndexError):
        store[5]


def test_a_store_larger_than_one_shard_and_items_larger_than_a_shard(tmp_path):
    big = np.arange(5000, dtype=np.int16).reshape(1000, 5)   # 10 kB, over shard_bytes by itself
    arrays = {"small": np.ones((4, 2), np.int16), "big": big, "after": np.zeros((7, 3, 5), np.int16)}
    store = build(tmp_path / "s", arrays, np.int16, shard_bytes=4096)
    assert len(list((tmp_path / "s").glob("shard-*.bin"))) == 3
    assert store.nbytes == sum(a.nbytes for a in arrays.values()) > 4096
    np.testing.assert_array_equal(store[1], big)
    np.testing.assert_array_equal(store[2], arrays["after"])


def test_subset_slices_and_pickling_keep_the_data_on_disk(tmp_path):
    arrays = {f"k{i}": np.full((2, i + 1), i, np.float32) for i in range(6)}
    store = build(tmp_path / "s", arrays, np.float32, shard_bytes=64)
    part = store.subset([4, 1])
    assert part.keys == ["k4", "k1"] and [int(a[0, 0]) for a in part] == [4, 1]
    assert store[1:3].keys == ["k1", "k2"] and part.subset([1]).keys == ["k1"]
    blob = pickle.dumps(part)
    assert len(blob) < 500   # the path and positions, not the arrays
    again = pickle.loads(blob)
    assert again.keys == ["k4", "k1"] and again[0].shape == (2, 5)


def test_casts_only_within_a_kind_and_rejects_duplicate_keys(tmp_path):
    with ShardWriter(tmp_path / "s", np.float16) as w:
        w.add("a", np.array([1.5, 2.25], np.float64))
        w.add("strided", np.arange(6.0).reshape(2, 3).T)
        with pytest.raises(TypeError):
            w.add("b", np.array([1.5], np.complex64))
        with pytest.raises(ValueError, match="twice"):
            w.add("a", np.zeros(1))
        store = w.close()
    assert store[0].dtype == np.float16 and store[0].tolist() == [1.5, 2.25]
    np.testing.assert_array_equal(store[1], np.arange(6.0).reshape(2, 3).T)
    with pytest.raises(FileExistsError):
        ShardWriter(tmp_path / "s", np.float16)


def test_an_interrupted_build_leaves_nothing_that_looks_complete(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "s", np.float32, shard_bytes=64) as w:
            w.add("a", np.ones(100, np.float32))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    w = ShardWriter(tmp_path / "s", np.float32)   # never closed: only a hidden partial directory
    w.add("a", np.ones(3, np.float32))
    assert not (tmp_path / "s").exists()
    with pytest.raises(ShardStoreError, match="no such store"):
        ShardedArrays.open(tmp_path / "s")
    w.abort()


def test_incomplete_or_corrupt_stores_are_refused_naming_the_directory(tmp_path):
    arrays = {f"k{i}": np.ones((4, 50), np.float32) for i in range(4)}
    d = tmp_path / "store"
    build(d, arrays, np.float32, shard_bytes=1000)
    index = (d / INDEX).read_text()
    shard = sorted(d.glob("shard-*.bin"))[-1]
    data = shard.read_bytes()

    shard.write_bytes(data[:-10])   # truncated
    with pytest.raises(ShardStoreError, match=f"{d}.*has {len(data) - 10} bytes"):
        ShardedArrays.open(d)
    shard.unlink()
    with pytest.raises(ShardStoreError, match=f"{d}.*missing"):
        ShardedArrays.open(d)
    shard.write_bytes(data)

    (d / INDEX).write_text(index[:40])
    with pytest.raises(ShardStoreError, match=f"{d}: unreadable"):
        ShardedArrays.open(d)
    bad = json.loads(index)
    bad["offsets"][-1] = 10**6
    (d / INDEX).write_text(json.dumps(bad))
    with pytest.raises(ShardStoreError, match=f"{d}: inconsistent"):
        ShardedArrays.open(d)
    (d / INDEX).unlink()
    with pytest.raises(ShardStoreError, match=f"{d}: incomplete store"):
        ShardedArrays.open(d)
    (d / INDEX).write_text(index)
    assert len(ShardedArrays.open(d)) == 4


def test_an_empty_store_and_zero_size_items(tmp_path):
    assert len(build(tmp_path / "empty", {}, np.float32, shard_bytes=64)) == 0
    store = build(tmp_path / "zeros", {"a": np.zeros((0, 3), np.float32)}, np.float32, shard_bytes=64)
    assert store[0].shape == (0, 3)
    assert ShardedArrays.open(tmp_path / "zeros")[0].shape == (0, 3)

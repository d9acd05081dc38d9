"""`--workers N` (cli/files.py): files of a folder go through N threads, each with its share of
torch's threads; the outputs are the files one worker writes, and every line of the log (done and
skipped) comes in the order of the files."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from cli_helpers import SR, cli, tone
from test_batched import ckpt_21  # noqa: F401  (fixture)
from vqkit.cli import files

pytestmark = pytest.mark.usefixtures("single_thread")


def test_run_files_uses_the_workers_and_reports_in_file_order(capsys):
    pairs = [(f"f{i}", f"o{i}") for i in range(6)]
    seen = {}

    def fn(src, dst):
        # the first files take longest, so later ones finish first on another thread
        time.sleep(0.05 * (6 - int(src[1:])))
        seen[src] = (threading.current_thread().name, torch.get_num_threads())
        if src == "f2":
            raise ValueError("f2: not audio")
        return f"{src} -> {dst}"

    code = files.run_files(pairs, fn, workers=3)
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out == ["f0 -> o0", "f1 -> o1", "skipped f2: not audio", "f3 -> o3", "f4 -> o4", "f5 -> o5",
                   "5 of 6 files done, 1 skipped"]
    names = {name for name, _ in seen.values()}
    assert len(names) == 3 and all(n.startswith("vqkit-files") for n in names)
    assert {threads for _, threads in seen.values()} == {1}


def test_one_worker_runs_in_the_calling_thread(capsys):
    names = []
    files.run_files([("a", "b"), ("c", "d")], lambda s, d: names.append(threading.current_thread().name) or s)
    assert names == [threading.current_thread().name] * 2


@pytest.mark.parametrize("batch", ["0", "300"])
def test_cli_encode_with_workers_writes_the_files_of_one_worker(ckpt_21, tmp_path, capsys, batch):  # noqa: F811
    src = tmp_path / "in"
    src.mkdir()
    for i, sec in enumerate([0.4, 1.3, 2.2, 0.9, 0.6]):
        sf.write(src / f"c{i}.wav", tone(sec, 200 + 90 * i), SR)
    (src / "c2b_broken.wav").write_bytes(b"RIFF not audio")
    outs, logs = {}, {}
    for workers in ("1", "3"):
        code, out, err = cli(capsys, "encode", ckpt_21, src, "-o", tmp_path / f"out{workers}",
                             "--batch-frames", batch, "--workers", workers)
        assert code == 0
        assert "5 of 6 files done, 1 skipped" in out + err
        # each file's line, by its source: "SRC -> OUT (...)" or "skipped SRC: why"
        logs[workers] = [line.removeprefix("skipped ").split(" ")[0].rstrip(":")
                         for line in out.splitlines() if "->" in line or line.startswith("skipped")]
        outs[workers] = {p.name: np.load(p) for p in sorted((tmp_path / f"out{workers}").glob("*.npy"))}
    assert len(outs["1"]) == 5 and list(outs["1"]) == list(outs["3"])
    for name, a in outs["1"].items():
        assert np.array_equal(a, outs["3"][name]), name
    assert logs["1"] == logs["3"] and len(logs["3"]) == 6   # the same lines in the same (file) order


def test_cli_refuses_zero_workers(ckpt_21, tmp_path, capsys):  # noqa: F811
    sf.write(tmp_path / "a.wav", tone(0.5), SR)
    code, out, err = cli(capsys, "encode", ckpt_21, tmp_path / "a.wav", "-o", tmp_path / "a.npy", "--workers", "0")
    assert code != 0 and "--workers 0: must be >= 1" in err

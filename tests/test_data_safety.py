"""No verb overwrites an input or reads its own outputs back; every file is written atomically (a
symlink at the destination is replaced, never written through); checkpoint pointers never lead out of
their run. Each case goes through the command line a user types."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import audio_folder, ckpt, cli, image_ckpt  # noqa: F401 (fixtures)
from vqkit.io.files import WriteError, atomic_write
from vqkit.models.tokenizer import Tokenizer
from vqkit.training.checkpoint import CheckpointError, latest_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py


def untouched(files: dict[Path, bytes]) -> bool:
    return all(p.is_file() and not p.is_symlink() and p.read_bytes() == b for p, b in files.items())


# ---- outputs never overwrite inputs -----------------------------------------------------------------

@pytest.mark.parametrize("verb", ["reconstruct", "encode"])
@pytest.mark.parametrize("where", ["same", "dotted", "linked"])
def test_output_folder_that_is_the_input_folder_is_refused(ckpt, tmp_path, capsys, verb, where):
    data = tmp_path / "data"
    files = audio_folder(data)
    (tmp_path / "link").symlink_to(data)
    out = {"same": data, "dotted": data / "x" / "..", "linked": tmp_path / "link"}[where]
    code, _, err = cli(capsys, verb, ckpt, data, "-o", out)
    assert code == 2 and f"-o {out} is the input folder {data}: vqkit would overwrite inputs" in err
    assert untouched(files) and sorted(p.name for p in data.rglob("*")) == ["a.wav", "b.wav"]


def test_an_output_folder_inside_the_input_folder_is_never_read_back(ckpt, tmp_path, capsys):
    data = tmp_path / "data"
    files = audio_folder(data)
    for run in range(2):
        code, out, _ = cli(capsys, "reconstruct", ckpt, data, "-o", data / "rec", "--vocoder", "griffin-lim")
        assert code == 0 and "2 of 2 files done" in out   # not 4 the second time
    assert f"not reading 2 files in {data / 'rec'}: it is the output folder, inside the input folder" in out
    assert untouched(files) and sorted(p.name for p in (data / "rec").iterdir()) == ["a.wav", "b.wav"]


def test_an_output_folder_above_the_input_may_not_land_on_an_input(ckpt, tmp_path, capsys):
    # inputs data/in/x.wav and data/in/in/x.wav; -o data maps the second onto data/in/x.wav
    files = audio_folder(tmp_path / "data" / "in", ("x.wav", "in/x.wav"))
    code, _, err = cli(capsys, "reconstruct", ckpt, tmp_path / "data" / "in", "-o", tmp_path / "data")
    assert code == 2 and f"{tmp_path / 'data' / 'in' / 'x.wav'} is inside the input folder" in err
    assert untouched(files)


@pytest.mark.parametrize("how", ["same", "dotted", "symlink", "hardlink"])
def test_output_file_that_is_the_input_is_refused(ckpt, tmp_path, capsys, how):
    files = audio_folder(tmp_path / "in", ("a.wav",))
    src = tmp_path / "in" / "a.wav"
    out = {"same": src, "dotted": tmp_path / "in" / "sub" / ".." / "a.wav"}.get(how, tmp_path / "other.wav")
    if how == "symlink":
        out.symlink_to(src)
    elif how == "hardlink":
        os.link(src, out)
    code, _, err = cli(capsys, "reconstruct", ckpt, src, "-o", out)
    assert code == 2 and f"is the input file {src} (or a link to it); refusing to overwrite an input" in err
    assert untouched(files)


def test_image_output_renamed_to_png_may_not_overwrite_the_input(image_ckpt, tmp_path, capsys):
    src = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(src)
    before = src.read_bytes()
    code, _, err = cli(capsys, "reconstruct", image_ckpt, src, "-o", tmp_path / "a.jpg")   # writes PNG: a.png
    assert code == 2 and f"{src} is the input file {src}" in err and src.read_bytes() == before


def test_eval_report_inside_its_data_is_refused(ckpt, tmp_path, capsys):
    files = audio_folder(tmp_path / "data")
    code, _, err = cli(capsys, "eval", ckpt, "--data", tmp_path / "data", "--out", tmp_path / "data" / "report",
                       "--no-progress", "--max-vocoded", "0")
    assert code == 2 and "--out" in err and f"is inside --data {tmp_path / 'data'}" in err
    assert untouched(files) and not (tmp_path / "data" / "report").exists()


@pytest.mark.parametrize("resume", [False, True])
def test_train_run_inside_its_data_is_refused_before_loading(tmp_path, capsys, resume):
    files = audio_folder(tmp_path / "data")
    run = tmp_path / "data" / "run"
    code, _, err = cli(capsys, "train", "--data", tmp_path / "data", "--out", run, *(["--resume"] if resume else []))
    assert code == 2 and f"--out {run} is inside --data {tmp_path / 'data'}" in err
    assert untouched(files) and not run.exists()
    code, _, err = cli(capsys, "train", "--data", tmp_path / "v", "--valid-data", tmp_path / "data",
                       "--out", tmp_path / "data")   # the run folder is the held-out folder
    assert code == 2 and "is --valid-data" in err


# ---- one atomic write: a link at the destination is replaced, never followed --------------------------

def test_encode_replaces_planted_symlinks_instead_of_writing_through_them(ckpt, tmp_path, capsys):
    audio_folder(tmp_path / "in", ("a.wav",))
    victims = {name: tmp_path / f"victim_{name}" for name in ("t.npy", "t.json")}
    for name, victim in victims.items():
        victim.write_text("precious")
        (tmp_path / name).symlink_to(victim)
    code, _, _ = cli(capsys, "encode", ckpt, tmp_path / "in" / "a.wav", "-o", tmp_path / "t.npy")
    assert code == 0 and all(v.read_text() == "precious" for v in victims.values())
    assert not (tmp_path / "t.npy").is_symlink() and np.load(tmp_path / "t.npy").ndim == 1
    assert '"format": "vqkit-tokens-v1"' in (tmp_path / "t.json").read_text()


def test_eval_replaces_planted_symlinks_in_the_report_folder(ckpt, tmp_path, capsys):
    audio_folder(tmp_path / "data")
    report = tmp_path / "report"
    report.mkdir()
    names = ("metrics.json", "index.html", "usage.png", "clip00.png", "clip00_original.wav")
    for name in names:
        (tmp_path / f"victim_{name}").write_text("precious")
        (report / name).symlink_to(tmp_path / f"victim_{name}")
    code, _, _ = cli(capsys, "eval", ckpt, "--data", tmp_path / "data", "--out", report, "--no-progress",
                     "--max-vocoded", "0")
    assert code == 0
    for name in names:
        assert (tmp_path / f"victim_{name}").read_text() == "precious", name
        assert (report / name).is_file() and not (report / name).is_symlink(), name
    assert not [p.name for p in report.iterdir() if ".tmp" in p.name]   # no temp file left behind


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write(path, "old")

    def crash(tmp):
        Path(tmp).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError, match=r"metrics.json: cannot write \(No space left on device\)"):
        atomic_write(path, crash)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# ---- checkpoints/latest stays inside the run ------------------------------------------------------------

@pytest.mark.parametrize("pointer", ["../../elsewhere", "ABSOLUTE", "link"])
def test_latest_pointer_leading_out_of_the_run_is_refused(ckpt, tmp_path, capsys, pointer):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for f in ckpt.iterdir():   # a complete checkpoint outside the run: following the pointer would load it
        (elsewhere / f.name).write_bytes(f.read_bytes())
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    if pointer == "link":
        (tmp_path / "run" / "checkpoints" / "step_00000001").symlink_to(elsewhere)
        pointer = "step_00000001"
    elif pointer == "ABSOLUTE":
        pointer = str(elsewhere)
    (tmp_path / "run" / "checkpoints" / "latest").write_text(pointer + "\n")
    audio_folder(tmp_path / "in", ("a.wav",))
    code, _, err = cli(capsys, "encode", tmp_path / "run", tmp_path / "in" / "a.wav", "-o", tmp_path / "t.npy")
    assert code == 2 and f"{tmp_path / 'run' / 'checkpoints' / 'latest'}: names {pointer!r}" in err
    assert "refusing to follow it" in err and not (tmp_path / "t.npy").exists()
    with pytest.raises(ValueError, match="refusing to follow it"):
        Tokenizer.from_pretrained(tmp_path / "run")


def test_resume_refuses_a_checkpoint_linked_from_outside(ckpt, tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step_00000005").symlink_to(ckpt)
    with pytest.raises(CheckpointError, match=r"step_00000005 is a link to .*, outside .*refusing to follow it"):
        latest_checkpoint(tmp_path / "run")

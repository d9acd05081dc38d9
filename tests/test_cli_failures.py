"""Crashes and wrong blame, through the command line: odd file names in reports, multi-row tokens,
any failure of one file in a folder, sizes that cannot fit, files that never end, and output
problems named as output problems."""
from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import vqkit.frontends.audio_io
from cli_helpers import SR, audio_folder, ckpt, cli, image_ckpt, tone  # noqa: F401 (fixtures)
from vqkit.models.tokenizer import Tokenizer
from vqkit.tokens_io import save_tokens

pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py


def png_of_size(path: Path, w: int, h: int) -> None:
    """A real, decodable all-black RGB PNG of w x h pixels, tiny on disk (one zlib stream of zeros)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * w)
    data = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


# ---- 4: user text is never markup ----------------------------------------------------------------------

def test_eval_report_for_a_file_name_with_dollar_signs(ckpt, tmp_path, capsys):
    audio_folder(tmp_path / "data", ("math $\\frac$ x.wav", "plain.wav"))
    code, out, err = cli(capsys, "eval", ckpt, "--data", tmp_path / "data", "--out", tmp_path / "report",
                         "--no-progress", "--max-vocoded", "0")
    assert code == 0, err
    record = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert record["data"]["files"] == 2 and Image.open(tmp_path / "report" / "clip00.png").size[0] > 100
    assert "math $\\frac$ x.wav" in (tmp_path / "report" / "index.html").read_text()


# ---- 5: token files of several rows ------------------------------------------------------------------

def test_decode_writes_one_file_per_row_and_the_rest_of_the_folder(ckpt, tmp_path, capsys):
    tok = Tokenizer.from_pretrained(ckpt)
    save_tokens(tmp_path / "in" / "two.npy", np.arange(172).reshape(2, 86) % 1000, tok)
    save_tokens(tmp_path / "in" / "one.npy", np.arange(40), tok)
    code, out, err = cli(capsys, "decode", ckpt, tmp_path / "in", "-o", tmp_path / "out", "--vocoder", "griffin-lim")
    assert code == 0 and "2 of 2 files done" in out, out + err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one.wav", "two_0.wav", "two_1.wav"]
    hop = tok.config.model.mel.hop_length
    for name in ("two_0.wav", "two_1.wav"):   # 86 frames each
        assert abs(sf.info(str(tmp_path / "out" / name)).frames - 86 * hop) <= 4 * hop


# ---- 6: any failure of one file is that file's; huge images are refused before decoding -------------

def test_a_9000x9000_png_is_refused_from_its_header(image_ckpt, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    png_of_size(tmp_path / "in" / "huge.png", 9000, 9000)
    assert (tmp_path / "in" / "huge.png").stat().st_size < 400_000
    Image.new("RGB", (32, 32), (10, 200, 30)).save(tmp_path / "in" / "small.png")
    t0 = time.perf_counter()
    code, out, _ = cli(capsys, "encode", image_ckpt, tmp_path / "in", "-o", tmp_path / "out")
    assert time.perf_counter() - t0 < 20 and code == 0 and "1 of 2 files done, 1 skipped" in out
    assert f"skipped {tmp_path / 'in' / 'huge.png'}: image too large (9000x9000 = 81.0 Mpx > the 64 Mpx budget" in out
    assert [p.name for p in (tmp_path / "out").glob("*.npy")] == ["small.npy"]
    code, out, _ = cli(capsys, "encode", image_ckpt, tmp_path / "in" / "small.png", "-o", tmp_path / "s.npy",
                       "--max-pixels", "1000")   # the budget is the user's to set
    assert code == 1 and "32x32 = 0.0 Mpx > the 0.001 Mpx budget" in out


def test_any_exception_of_one_file_is_skipped_counted_and_named(ckpt, tmp_path, capsys, monkeypatch):
    import vqkit.models.audio_files

    audio_folder(tmp_path / "in", ("a.wav", "b.wav", "c.wav"))
    real = vqkit.models.audio_files.audio_blocks   # encode reads audio block by block

    def load(path, rate, *args):
        if Path(path).name == "b.wav":
            raise MemoryError("cannot allocate 12 GB")
        return real(path, rate, *args)

    monkeypatch.setattr(vqkit.models.audio_files, "audio_blocks", load)
    code, out, _ = cli(capsys, "encode", ckpt, tmp_path / "in", "-o", tmp_path / "out")
    assert code == 0 and "2 of 3 files done, 1 skipped" in out
    assert f"skipped {tmp_path / 'in' / 'b.wav'}: MemoryError: cannot allocate 12 GB" in out

    def interrupt(path, rate, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(vqkit.models.audio_files, "audio_blocks", interrupt)
    code, _, err = cli(capsys, "encode", ckpt, tmp_path / "in", "-o", tmp_path / "out2")
    assert code == 130 and "interrupted" in err and not (tmp_path / "out2").exists()   # Ctrl-C still stops


# ---- 7: sizes that cannot fit are refused up front, naming the key ---------------------------------------

@pytest.mark.parametrize("override, key", [("model.quantizer.levels=[100000,100000,100000]", "model.quantizer.levels"),
                                           ("data.segment_frames=100000000", "data.segment_frames")])
def test_train_refuses_a_config_that_cannot_fit(tmp_path, capsys, override, key):
    # --data does not exist: the refusal comes before any data is read
    code, _, err = cli(capsys, "train", "--data", tmp_path / "nothing", "--out", tmp_path / "run", override)
    assert code == 2 and err.startswith(f"vqkit train: error: {key}: training this config needs at least ")
    assert f"reduce {key}" in err and not (tmp_path / "run").exists()


def test_checkpoint_config_edited_to_a_huge_width_is_refused_from_the_weights_header(ckpt, tmp_path, capsys):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes())
    (d / "config.yaml").write_text((ckpt / "config.yaml").read_text().replace("- 24\n", "- 1000000\n", 1))
    assert "1000000" in (d / "config.yaml").read_text()
    sf.write(tmp_path / "a.wav", tone(), SR)
    code, _, err = cli(capsys, "encode", d, tmp_path / "a.wav", "-o", tmp_path / "t.npy")
    assert code == 2 and f"{d / 'model.safetensors'} (config {d / 'config.yaml'}, a mel model): weights do not " \
        "fit the configured model (size mismatch for " in err
    assert ", 24, " not in err and "1000000" in err and "was its config edited?" in err


# ---- 8: every small file has a size limit -----------------------------------------------------------------

def test_config_from_dev_zero_is_refused(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--config", "/dev/zero", "--data", tmp_path / "d", "--out", tmp_path / "r")
    assert code == 2 and err.strip() == ("vqkit train: error: /dev/zero: more than the 1 MiB a config file may "
                                         "have (not a regular file; is this the right file?)")


def test_yaml_alias_bomb_is_refused(tmp_path, capsys):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]   # 10^9 values
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    code, _, err = cli(capsys, "train", "--config", tmp_path / "bomb.yaml", "--data", tmp_path / "d",
                       "--out", tmp_path / "r")
    assert code == 2 and f"{tmp_path / 'bomb.yaml'}: more than 100,000 values once its aliases are expanded" in err


def test_a_huge_token_sidecar_is_refused_by_name(ckpt, tmp_path, capsys):
    save_tokens(tmp_path / "t.npy", np.arange(20), Tokenizer.from_pretrained(ckpt))
    side = tmp_path / "t.json"
    side.write_text(side.read_text()[:-1] + ", \"pad\": \"" + "x" * 2**21 + "\"}")
    code, out, _ = cli(capsys, "decode", ckpt, tmp_path / "t.npy", "-o", tmp_path / "t.wav", "--vocoder", "griffin-lim")
    assert code == 1 and f"skipped {tmp_path / 't.npy'}: {side}: 2 MiB, larger than the 1 MiB a token sidecar " \
        "may have" in out


# ---- 9: output problems blamed on the output; checks before the work; no empty reports ------------------

def test_an_unwritable_output_is_blamed_on_the_output(ckpt, tmp_path, capsys):
    audio_folder(tmp_path / "in", ("sub/a.wav",))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_text("a file where a folder should be")
    code, out, _ = cli(capsys, "reconstruct", ckpt, tmp_path / "in", "-o", tmp_path / "out")
    assert code == 1 and out.startswith(f"skipped {tmp_path / 'in' / 'sub' / 'a.wav'}: its output "
                                        f"{tmp_path / 'out' / 'sub' / 'a.wav'}: cannot write (")
    assert f"{tmp_path / 'out' / 'sub'} is a file, not a folder" in out or "Not a directory" in out
    code, _, err = cli(capsys, "reconstruct", ckpt, tmp_path / "in", "-o", tmp_path / "out" / "sub")
    assert code == 2 and "is a file; a folder input" in err


def test_train_checks_its_out_folder_before_loading_data(tmp_path, capsys):
    (tmp_path / "run").write_text("a file")
    code, _, err = cli(capsys, "train", "--data", tmp_path / "nothing", "--out", tmp_path / "run")
    assert code == 2 and err.strip() == f"vqkit train: error: --out {tmp_path / 'run'}: is a file, not a folder"
    code, _, err = cli(capsys, "train", "--data", tmp_path / "nothing", "--out", tmp_path / "run" / "sub")
    assert code == 2 and "cannot create it" in err


def test_a_failed_eval_leaves_no_report_folder(ckpt, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    code, _, err = cli(capsys, "eval", ckpt, "--data", tmp_path / "data", "--out", tmp_path / "report", "--no-progress")
    assert code == 2 and "none of 1 files is usable" in err and not (tmp_path / "report").exists()


def test_a_text_file_named_flac_is_not_audio(ckpt, tmp_path, capsys):
    (tmp_path / "notes.flac").write_text("hello, this is text and not audio at all\n")
    code, out, _ = cli(capsys, "encode", ckpt, tmp_path / "notes.flac", "-o", tmp_path / "t.npy")
    assert code == 1 and f"skipped {tmp_path / 'notes.flac'}: not an audio file (FFmpeg decodes no audio" in out
    assert "zero-length" not in out

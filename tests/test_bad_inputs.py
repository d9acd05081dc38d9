"""The broken-input corpus: every kind of bad file a user can hand vqkit, built here, each checked
against its documented behaviour (docs/bad-input.md): handled, skipped and counted, or a one-line
error naming the file and the problem. The decoders' unit tests stay in test_audio_io.py and
test_image_io.py; this file is the one list of cases, seen the way a user sees them.
"""
from __future__ import annotations

import pickle
import shutil
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import vqkit.io.inputs
from conftest import TINY
from vqkit.cli import main
from vqkit.config import ConfigError, load_config, save_config
from vqkit.data.audio_corpus import load_mel_corpus
from vqkit.data.image_corpus import ImageCropBatches, load_image_corpus
from vqkit.frontends.audio_io import load_audio
from vqkit.frontends.image import load_image, to_uint8
from vqkit.frontends.mel import MelFrontend
from vqkit.models.tokenizer import Tokenizer
from vqkit.tokens_io import save_tokens

pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py
SR = 22050


def tone(seconds=1.0, rate=SR, freq=440.0, amp=0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(audio: np.ndarray, rate: int = SR) -> float:
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spec)])


def png_bytes(arr: np.ndarray | None, width_height=None) -> bytes:
    """A PNG written by hand: 16-bit RGB (Pillow cannot write it), or only a header claiming a size."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    h, w = width_height[::-1] if width_height else arr.shape[:2]
    rows = b"" if width_height else b"".join(b"\0" + r.astype(">u2").tobytes() for r in arr)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8 if rows == b"" else 16, 2, 0, 0, 0))
            + (chunk(b"IDAT", zlib.compress(rows)) if rows else b"") + chunk(b"IEND", b""))


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def build(tmp_path_factory, cases: dict, load):
    """Write every case into one folder and load it as a corpus, every skipped file logged."""
    root = tmp_path_factory.mktemp("corpus")
    for name, (make, _) in cases.items():
        make(root / name)
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vqkit.io.inputs, "LOG_FIRST", 100)   # not only the first 5 per reason
        return root, load(root, lines.append), lines


def check_case(expect, path: Path, kept: dict, lines: list[str]) -> None:
    """Handled: kept, and expect(item, path) holds. Skipped: absent, and exactly one log line names
    the reason, the file and the problem."""
    if callable(expect):
        expect(kept[path.name], path)
        return
    reason, phrase = expect
    logged = [line for line in lines if str(path) in line]
    assert path.name not in kept and len(logged) == 1
    assert logged[0].startswith(f"skipping ({reason}) {path}: ") and phrase in logged[0]


def skip_counts(cases: dict) -> dict[str, int]:
    return dict(Counter(e[0] for _, e in cases.values() if not callable(e)))


# ---- audio: a folder with every kind of file, loaded as a training corpus ----------------------

def _wav(x, rate=SR, subtype="PCM_16", **kw):
    return lambda p: sf.write(p, x, rate, subtype=subtype, **kw)


def _bytes(data: bytes):
    return lambda p: p.write_bytes(data)


def _with(x, i, value):
    y = x.copy()
    y[i] = value
    return y


def _cut(maker, keep=None):
    """maker's file cut to `keep` bytes (None: half)."""
    def make(p):
        maker(p)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return make


X, LEFT, RIGHT = tone(), tone(amp=0.6), tone(freq=1000.0, amp=-0.3)
Q16 = 1 / 32768 + 1e-6   # 16-bit quantisation step


def _same(ref, atol):
    def check(clip, path):
        np.testing.assert_allclose(load_audio(path, SR), ref, atol=atol)
    return check


def _resampled(clip, path):   # 1 s at 8 or 96 kHz -> 1 s at 22.05 kHz, same pitch and level
    y = load_audio(path, SR)
    assert abs(clip.num_samples - SR) <= 1 and abs(peak_hz(y) - 440) <= 2 and 0.45 < np.abs(y).max() <= 0.55


def _rescaled(clip, path):
    y = load_audio(path, SR)
    np.testing.assert_allclose(y, X / np.abs(X).max(), atol=1e-6)   # scaled to full scale, not clipped


# name -> (write the file, "handled" check(clip, path) | (skip reason, phrase in the log line))
AUDIO_CASES = {
    "pcm16.wav": (_wav(X), _same(X, Q16)),
    "pcm8.wav": (_wav(X, subtype="PCM_U8"), _same(X, 1 / 128 + 1e-6)),
    "pcm24.wav": (_wav(X, subtype="PCM_24"), _same(X, 2 ** -22)),
    "float.wav": (_wav(X, subtype="FLOAT"), _same(X, 1e-7)),
    "double.wav": (_wav(X.astype(np.float64), subtype="DOUBLE"), _same(X, 1e-7)),
    "hot_float.wav": (_wav(4 * X, subtype="FLOAT"), _rescaled),
    "stereo.wav": (_wav(np.stack([LEFT, RIGHT], 1)), _same((LEFT + RIGHT) / 2, 2 * Q16)),
    "rate8k.wav": (_wav(tone(rate=8000), 8000), _resampled),
    "rate96k.wav": (_wav(tone(rate=96000), 96000, "PCM_24"), _resampled),
    "wav_named.mp3": (_wav(X, format="WAV"), _same(X, Q16)),           # content decides, not the name
    "flac_named.wav": (_wav(X, format="FLAC"), _same(X, Q16)),
    "truncated_data.wav": (_cut(_wav(X), 44 + 2 * SR // 2), _same(X[: SR // 2], Q16)),   # half the samples
    "zero_bytes.wav": (_bytes(b""), ("unreadable", "empty file (0 bytes)")),
    "header_only.wav": (_wav(np.zeros(0, np.float32)), ("unreadable", "zero-length audio")),
    "truncated_header.wav": (_cut(_wav(X), 30), ("unreadable", "cannot decode audio")),
    "garbage.wav": (_bytes(np.random.default_rng(0).bytes(5000)), ("unreadable", "cannot decode audio")),
    "text.mp3": (_bytes(b"not an mp3 stream\n" * 200), ("unreadable", "cannot decode audio")),
    "image_named.wav": (lambda p: Image.new("RGB", (8, 8)).save(p, format="PNG"), ("unreadable", "not an audio file")),
    "nan.wav": (_wav(_with(X, 100, np.nan), subtype="FLOAT"), ("non-finite", "1 non-finite samples")),
    "inf.wav": (_wav(_with(X, slice(5, 8), -np.inf), subtype="FLOAT"), ("non-finite", "3 non-finite samples")),
    "one_sample.wav": (_wav(np.array([0.5], np.float32)), ("too short", "0.00 s < min_seconds=0.3")),
    "silent.wav": (_wav(np.zeros(SR, np.float32)), ("silent", "silent (peak")),
}
IGNORED = {"notes.txt": _wav(X, format="WAV"), "backup.wav.bak": _wav(X, format="WAV")}   # not audio extensions


@pytest.fixture(scope="module")
def audio_corpus(tmp_path_factory):
    return build(tmp_path_factory, {**AUDIO_CASES, **{k: (v, None) for k, v in IGNORED.items()}},
                 lambda root, log: load_mel_corpus(root, MelFrontend(), min_seconds=0.3, log=log))


@pytest.mark.parametrize("name", AUDIO_CASES)
def test_audio_case(audio_corpus, name):
    root, corpus, lines = audio_corpus
    clips = {c.path.name: c for c in corpus.clips}
    if name in clips:                # every kept clip: a finite log-mel of its decoded length
        mel, n = clips[name].mel, clips[name].num_samples
        assert torch.isfinite(mel).all() and mel.shape == (80, MelFrontend().num_frames(n))
        assert n == len(load_audio(root / name, SR))
    check_case(AUDIO_CASES[name][1], root / name, clips, lines)


def test_audio_corpus_counts(audio_corpus):
    _, corpus, lines = audio_corpus
    assert corpus.skipped == skip_counts(AUDIO_CASES)
    assert len(corpus) == len(AUDIO_CASES) - sum(corpus.skipped.values())
    assert not any(name in line for line in lines for name in IGNORED)   # never opened, never counted
    assert lines[-1] == f"{corpus.root}: {corpus.summary()}" and f"skipped {sum(corpus.skipped.values())} (" in lines[-1]


def test_one_sample_clip_without_a_minimum_is_still_too_short(tmp_path):
    sf.write(tmp_path / "one.wav", np.array([0.5], np.float32), 8000)     # resampled: 3 samples
    sf.write(tmp_path / "ok.wav", X, SR)
    assert load_audio(tmp_path / "one.wav", SR).shape == (3,)              # the decoder handles it
    lines: list[str] = []
    corpus = load_mel_corpus(tmp_path, MelFrontend(), min_seconds=0.0, log=lines.append)
    assert [c.path.name for c in corpus.clips] == ["ok.wav"] and corpus.skipped == {"too short": 1}
    assert any("one.wav: audio of 3 samples is too short for n_fft=1024" in line for line in lines)


# ---- images ----------------------------------------------------------------------------------------

RGB = np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8)
PALETTE = [255, 0, 0, 0, 128, 255, 10, 20, 30] + [0] * 759
G16 = np.random.default_rng(2).integers(0, 65536, (12, 16)).astype(np.uint16)
RGB16 = np.random.default_rng(3).integers(0, 65536, (12, 16, 3)).astype(np.uint16)


def _img(arr, mode=None, **kw):
    return lambda p: (Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)).save(p, **kw)


def _palette(p):
    im = Image.fromarray((np.arange(12 * 16) % 3).reshape(12, 16).astype(np.uint8), "P")
    im.putpalette(PALETTE)
    im.save(p)


def _cmyk(p):
    im = Image.new("CMYK", (16, 12), (0, 255, 255, 0))           # pure red ...
    im.paste((0, 0, 0, 255), (0, 0, 8, 12))                      # ... right of a black (K) half
    im.save(p)


def _pixels(expected_uint8):
    def check(img, path):   # RGB in [-1, 1], exactly the expected 8-bit values
        assert img.shape == (3, 12, 16) and -1 <= img.min() and img.max() <= 1
        assert np.array_equal(to_uint8(img), expected_uint8)
    return check


def _gray16(img, path):
    exact = load_image(path)                                       # full 16-bit precision ...
    torch.testing.assert_close(exact[0], torch.from_numpy(G16 / 65535 * 2 - 1).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(img.float(), exact, atol=1e-3, rtol=0)   # ... float16 in the corpus


PAL_RGB = np.array(PALETTE[:9], np.uint8).reshape(3, 3)[(np.arange(12 * 16) % 3).reshape(12, 16)]
CMYK_RGB = np.zeros((12, 16, 3), np.uint8)
CMYK_RGB[:, 8:, 0] = 255

IMAGE_CASES = {
    "rgb.png": (_img(RGB), _pixels(RGB)),
    "palette.png": (_palette, _pixels(PAL_RGB)),
    "cmyk.tif": (_cmyk, _pixels(CMYK_RGB)),
    "gray16.png": (_img(G16), _gray16),
    "rgb16.png": (lambda p: p.write_bytes(png_bytes(RGB16)), _pixels((RGB16 >> 8).astype(np.uint8))),  # Pillow: 8 bits
    "png_named.jpg": (_img(RGB, format="PNG"), _pixels(RGB)),
    "zero_bytes.png": (_bytes(b""), ("unreadable", "empty file (0 bytes)")),
    "truncated.png": (_cut(_img(RGB, format="PNG")), ("unreadable", "truncated")),
    "truncated.jpg": (_cut(_img(RGB, format="JPEG")), ("unreadable", "truncated")),
    "garbage.png": (_bytes(np.random.default_rng(0).bytes(3000)), ("unreadable", "not an image")),
    "audio_named.png": (_wav(X, format="WAV"), ("unreadable", "not an image")),
    "nan_float.tif": (_img(np.full((12, 16), np.nan, np.float32)), ("non-finite", "NaN or Inf")),
    "one_pixel.png": (_img(RGB[:1, :1]), ("too small", "1x1 pixels, a side < min_size=8")),
    "bomb.png": (lambda p: p.write_bytes(png_bytes(None, width_height=(20000, 20000))),
                 ("too large", "decompression bomb")),
}


@pytest.fixture(scope="module")
def image_corpus(tmp_path_factory):
    return build(tmp_path_factory, IMAGE_CASES, lambda root, log: load_image_corpus(root, min_size=8, log=log))


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_image_case(image_corpus, name):
    root, corpus, lines = image_corpus
    images = {p.name: im for p, im in zip(corpus.paths, corpus.images)}
    check_case(IMAGE_CASES[name][1], root / name, images, lines)


def test_image_corpus_counts(image_corpus):
    _, corpus, lines = image_corpus
    assert corpus.skipped == skip_counts(IMAGE_CASES) and len(corpus) == len(IMAGE_CASES) - sum(corpus.skipped.values())
    assert lines[-1] == f"{corpus.root}: {corpus.summary()}"


def test_one_pixel_image_is_upscaled_when_allowed(tmp_path):
    Image.new("RGB", (1, 1), (10, 200, 30)).save(tmp_path / "dot.png")
    corpus = load_image_corpus(tmp_path, min_size=1, log=lambda m: None)
    x, _ = ImageCropBatches(corpus.images, size=8, batch_size=2, seed=0)[0]
    assert x.shape == (2, 3, 8, 8) and (to_uint8(x[0]) == (10, 200, 30)).all()   # one colour, upscaled


def test_huge_image_loads_in_bounded_memory(tmp_path):
    import tracemalloc

    h, w = 6000, 6000                                     # 36 Mpx: under Pillow's bomb limit, so loaded
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.arange(w, dtype=np.uint8)[None]
    arr[..., 2] = 200
    Image.fromarray(arr).save(tmp_path / "huge.png", compress_level=1)
    del arr
    tracemalloc.start()
    try:
        img = load_image(tmp_path / "huge.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert img.shape == (3, h, w) and img.dtype == torch.float32
    assert to_uint8(img[:, 4000:4001, 250:260])[0].tolist() == [[v, 0, 200] for v in range(250, 256)] + \
        [[v, 0, 200] for v in range(4)]
    assert peak < 20 * h * w, f"{peak / (h * w):.1f} bytes per pixel"   # decoded pixels + one float32 copy


# ---- configs, through the command line -------------------------------------------------------------

CONFIG_CASES = {   # file text -> phrase the one-line error must contain, besides the file name
    "malformed.yaml": ("train: [unclosed\n", "not valid YAML: line 2, column 1"),
    "tab.yaml": ("train:\n\tsteps: 3\n", "not valid YAML: line 2"),
    "python_tag.yaml": ("!!python/object/apply:os.system ['touch {marker}']\n", "could not determine a constructor"),
    "typo_key.yaml": ("train:\n  stpes: 3\n", "train.stpes: unknown key (did you mean train.steps?"),
    "wrong_type.yaml": ("train:\n  steps: ten\n", "train.steps: expected an integer, got 'ten'"),
    "list.yaml": ("- 1\n- 2\n", "expected a mapping at the top level, got list"),
    "binary.yaml": (b"\xff\xfe\x00model: 1\n", "not a text (UTF-8) file"),
    "a_directory.yaml": (None, "cannot read the config file"),
}


@pytest.mark.parametrize("name", CONFIG_CASES)
def test_train_with_a_bad_config_file(tmp_path, capsys, name):
    text, phrase = CONFIG_CASES[name]
    path, marker = tmp_path / name, tmp_path / "EXECUTED"
    if text is None:
        path.mkdir()
    elif isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text.format(marker=marker))
    code, _, err = cli(capsys, "train", "--config", path, "--data", tmp_path / "data", "--out", tmp_path / "run")
    line = one_line_error(err)
    assert code == 2 and line.startswith(f"vqkit train: error: {path}: ") and phrase in line
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_train_with_a_mistyped_override(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--data", tmp_path / "data", "--out", tmp_path / "run", "model.refiner.mdoe=shared")
    assert code == 2 and "override 'model.refiner.mdoe=shared': model.refiner.mdoe: unknown key (did you mean " \
        "model.refiner.mode?" in one_line_error(err)


# ---- checkpoints ------------------------------------------------------------------------------------

class Trap:
    """Unpickling this creates a marker file: proof that a loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny_tokenizer(seed: int, *extra: str) -> Tokenizer:
    torch.manual_seed(seed)
    return Tokenizer(load_config(preset="mqgan-refiner", overrides=[*TINY, *extra])).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Checkpoints: a, b (same config, other weights), wide (another width), an image config."""
    root = tmp_path_factory.mktemp("ckpts")
    tiny_tokenizer(0).save_pretrained(root / "a")
    tiny_tokenizer(1).save_pretrained(root / "b")
    tiny_tokenizer(0, "model.backbone.channels=[32]").save_pretrained(root / "wide")
    save_config(load_config(preset="vqgan", overrides=["model.backbone.channels=[16, 32]"]), root / "image.yaml")
    sf.write(root / "x.wav", X, SR)
    return root


def _nan_weights(d):   # what a diverged run would have saved
    state = load_file(str(d / "model.safetensors"))
    state[sorted(k for k, v in state.items() if v.is_floating_point())[-1]].fill_(float("nan"))
    save_file(state, str(d / "model.safetensors"))


def _run_dir(d):
    shutil.move(str(d), str(d.parent / "tmp"))
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "latest").write_text("step_00000009\n")


W, C = "model.safetensors", "config.yaml"
CKPT_CASES = {   # name -> (break checkpoint dir d (root holds the others), exception, file named, phrase)
    "weights_of_another_width": (lambda d, r: shutil.copy(r / "wide" / W, d / W), ValueError, W, "do not fit"),
    "random_safetensors": (lambda d, r: save_file({"foo": torch.randn(3)}, str(d / W)), ValueError, W,
                           "unexpected keys ['foo']"),
    "torch_save_zip": (lambda d, r: torch.save({"w": Trap(d.parent / "UNPICKLED")}, d / W), ValueError, W,
                       "zip archive (PyTorch's torch.save format), not safetensors; vqkit never unpickles"),
    "pickle": (lambda d, r: (d / W).write_bytes(pickle.dumps(Trap(d.parent / "UNPICKLED"))), ValueError, W,
               "a Python pickle (legacy torch.save format), not safetensors"),
    "image_config_mel_weights": (lambda d, r: shutil.copy(r / "image.yaml", d / C), ValueError, W,
                                 "an image model): weights do not fit the configured model"),
    "zero_byte_weights": (lambda d, r: (d / W).write_bytes(b""), ValueError, W, "not a valid safetensors file"),
    "nan_weights": (lambda d, r: _nan_weights(d), ValueError, W, "weights contain NaN or Inf"),
    "binary_config": (lambda d, r: (d / C).write_bytes(b"\x80\xff config"), ConfigError, C, "not a text (UTF-8)"),
    "python_tag_config": (lambda d, r: (d / C).write_text(f"!!python/object/apply:os.system ['touch {d.parent}/RAN']\n"),
                          ConfigError, C, "not valid YAML"),
    "empty_config": (lambda d, r: (d / C).write_text(""), ConfigError, C, "empty config"),
    "unknown_key_config": (lambda d, r: (d / C).write_text((d / C).read_text() + "extra: 1\n"), ConfigError, C,
                           "extra: unknown key"),
    "no_weights": (lambda d, r: (d / W).unlink(), FileNotFoundError, "", "not a vqkit checkpoint, no model.safetensors"),
    "dangling_latest": (lambda d, r: _run_dir(d), FileNotFoundError, "checkpoints/latest",
                        "names checkpoint 'step_00000009'"),
}


@pytest.mark.parametrize("name", CKPT_CASES)
def test_bad_checkpoint(saved, tmp_path, capsys, name):
    brk, exc, named, phrase = CKPT_CASES[name]
    d = tmp_path / "ckpt"
    shutil.copytree(saved / "a", d)
    brk(d, saved)
    where = str(d / named) if named else str(d)
    with pytest.raises(exc) as err:
        Tokenizer.from_pretrained(d)
    assert str(err.value).startswith(where) and phrase in str(err.value)
    code, _, err = cli(capsys, "encode", d, saved / "x.wav", "-o", tmp_path / "t.npy")
    line = one_line_error(err)
    assert code == 2 and line.startswith(f"vqkit encode: error: {where}") and phrase in line
    assert not (tmp_path / "t.npy").exists()
    assert not (tmp_path / "UNPICKLED").exists() and not (tmp_path / "RAN").exists()


def test_the_pickle_traps_are_armed(tmp_path):
    """The traps above would really run code if anything unpickled them."""
    pickle.loads(pickle.dumps(Trap(tmp_path / "one")))
    torch.save({"w": Trap(tmp_path / "two")}, tmp_path / "t.pt")
    torch.load(tmp_path / "t.pt", weights_only=False)
    assert (tmp_path / "one").exists() and (tmp_path / "two").exists()


# ---- tokens, through the command line --------------------------------------------------------------

def _tokens(saved, path, ids=(1, 2, 3), by="b"):
    save_tokens(path, np.array(ids), Tokenizer.from_pretrained(saved / by))


def _object_array(saved, path):
    _tokens(saved, path, by="a")
    np.save(path, np.array([Trap(path.parent / "UNPICKLED"), 1], dtype=object), allow_pickle=True)


TOKEN_CASES = {   # name -> (write tokens.npy for checkpoint "a", phrase of the skip line)
    "another_tokenizer": (lambda s, p: _tokens(s, p), "not by this one"),
    "out_of_range": (lambda s, p: (_tokens(s, p, by="a"), np.save(p, np.array([1, 5000]))), "out of range [1, 5000]"),
    "no_sidecar": (lambda s, p: (_tokens(s, p, by="a"), p.with_suffix(".json").unlink()), "sidecar tokens.json is missing"),
    "float_tokens": (lambda s, p: (_tokens(s, p, by="a"), np.save(p, np.array([1.5]))), "must be integers"),
    "pickled_objects": (_object_array, "not a token array"),
}


@pytest.mark.parametrize("name", TOKEN_CASES)
def test_decode_bad_tokens(saved, tmp_path, capsys, name):
    make, phrase = TOKEN_CASES[name]
    path = tmp_path / "tokens.npy"
    make(saved, path)
    code, out, _ = cli(capsys, "decode", saved / "a", path, "-o", tmp_path / "x.wav", "--vocoder", "griffin-lim")
    assert code == 1 and f"skipped {path}: " in out and f"{path}: {path}" not in out and phrase in out
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "UNPICKLED").exists()


def test_encode_folder_skips_and_counts_bad_files(saved, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name, make in {"good.wav": _wav(X), "nan.wav": AUDIO_CASES["nan.wav"][0],
                       "garbage.wav": AUDIO_CASES["garbage.wav"][0]}.items():
        make(src / name)
    code, out, _ = cli(capsys, "encode", saved / "a", src, "-o", tmp_path / "out")
    assert code == 0 and "1 of 3 files done, 2 skipped" in out
    assert f"skipped {src / 'nan.wav'}" in out and f"skipped {src / 'garbage.wav'}" in out
    assert [p.name for p in (tmp_path / "out").glob("*.npy")] == ["good.npy"]


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch, capsys):
    import vqkit.cli.info

    def boom(args):
        raise TypeError("boom\nsecond line")

    monkeypatch.setattr(vqkit.cli.info, "run", boom)
    code, _, err = cli(capsys, "info", "x")
    assert code == 1 and "internal error (TypeError: boom; second line)" in one_line_error(err)
    monkeypatch.setenv("VQKIT_DEBUG", "1")
    with pytest.raises(TypeError):
        main(["info", "x"])

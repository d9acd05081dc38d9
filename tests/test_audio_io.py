"""vqkit.frontends.audio_io: decoding every supported kind of file, and failing clearly on broken ones."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

av = pytest.importorskip("av")

from vqkit.frontends.audio_io import (AUDIO_EXTENSIONS, AudioError, _frame_to_float, _read_pyav,
                                      find_audio_files, load_audio, save_wav)

ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


def sine(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(audio: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spec)])


def encode_pyav(path: Path, codec: str, planes: np.ndarray, rate: int, fmt: str, layout: str) -> Path:
    """Write a file with FFmpeg's encoder (for formats soundfile cannot write)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(planes, format=fmt, layout=layout)
        frame.sample_rate = rate
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    return path


def test_extensions_are_lowercase_suffixes():
    assert set(AUDIO_EXTENSIONS) >= {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif",
                                     ".aiff", ".g722"}
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_EXTENSIONS)


def test_find_audio_files_recursive_sorted_case_insensitive(tmp_path):
    for rel in ["b.wav", "a/z.FLAC", "a/y.Mp3", "c/d/e.g722", "notes.txt", "x.wav.bak", "README"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "dir.wav").mkdir()  # a folder with an audio suffix is not a file
    found = [p.relative_to(tmp_path).as_posix() for p in find_audio_files(tmp_path)]
    assert found == ["a/y.Mp3", "a/z.FLAC", "b.wav", "c/d/e.g722"]


def test_find_audio_files_rejects_non_directory(tmp_path):
    f = tmp_path / "file.wav"
    f.write_bytes(b"x")
    for bad in (f, tmp_path / "missing"):
        with pytest.raises(AudioError, match=str(bad.name)):
            find_audio_files(bad)


def test_pcm16_wav_roundtrip_exact_to_quantisation(tmp_path):
    x = sine(440, 0.5, 16000)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    y = load_audio(tmp_path / "a.wav", 16000)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= 1 / 32768 + 1e-7


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = sine(440, 0.5, 16000, 0.6), sine(1000, 0.5, 16000, -0.3)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    y = load_audio(tmp_path / "st.wav", 16000)
    assert y.ndim == 1
    np.testing.assert_allclose(y, (left + right) / 2, atol=2 / 32768)


@pytest.mark.parametrize("src_rate", [8000, 48000])
def test_resampling_keeps_length_and_pitch(tmp_path, src_rate):
    x = sine(440, 1.0, src_rate)
    sf.write(tmp_path / "r.wav", x, src_rate, subtype="PCM_16")
    y = load_audio(tmp_path / "r.wav", 22050)
    assert abs(len(y) - len(x) * 22050 / src_rate) <= 1
    assert abs(peak_hz(y, 22050) - 440) <= 2.0
    assert 0.45 < np.abs(y).max() <= 0.55  # amplitude preserved, no gain change


def test_24bit_and_float_wav(tmp_path):
    x = sine(440, 0.3, 22050, 0.7)
    sf.write(tmp_path / "p24.wav", x, 22050, subtype="PCM_24")
    sf.write(tmp_path / "f32.wav", x, 22050, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "p24.wav", 22050), x, atol=2 ** -22)
    np.testing.assert_allclose(load_audio(tmp_path / "f32.wav", 22050), x, atol=1e-7)


def test_float_wav_beyond_full_scale_is_rescaled_not_clipped(tmp_path):
    x = sine(440, 0.3, 22050, 2.0)
    sf.write(tmp_path / "hot.wav", x, 22050, subtype="FLOAT")
    y = load_audio(tmp_path / "hot.wav", 22050)
    assert np.abs(y).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(y, x / np.abs(x).max(), atol=1e-6)  # same shape: nothing clipped


def test_flac_and_ogg(tmp_path):
    x = sine(440, 1.0, 16000)
    sf.write(tmp_path / "a.flac", x, 16000, subtype="PCM_16")
    sf.write(tmp_path / "a.ogg", x, 16000, format="OGG", subtype="VORBIS")
    np.testing.assert_allclose(load_audio(tmp_path / "a.flac", 16000), x, atol=1 / 32768 + 1e-7)
    y = load_audio(tmp_path / "a.ogg", 16000)
    assert abs(len(y) - len(x)) <= 64 and abs(peak_hz(y, 16000) - 440) <= 2.0


def test_stereo_aac_m4a_goes_through_pyav(tmp_path):
    left, right = sine(440, 1.0, 16000, 0.6), sine(440, 1.0, 16000, 0.2)
    path = encode_pyav(tmp_path / "st.m4a", "aac", np.stack([left, right]), 16000, "fltp", "stereo")
    with pytest.raises(Exception):
        sf.read(path)  # libsndfile cannot: the fallback is what is tested
    y = load_audio(path, 16000)
    assert len(y) >= 16000 and abs(peak_hz(y, 16000) - 440) <= 2.0
    # average of amplitudes 0.6 and 0.2 (AAC is lossy, so only roughly)
    assert 0.35 < np.percentile(np.abs(y), 99.9) < 0.47


def test_g722_encoded_here_decodes_to_same_pitch(tmp_path):
    x = sine(440, 1.0, 16000, 0.5)
    path = encode_pyav(tmp_path / "t.g722", "g722", (x * 32767).astype(np.int16)[None], 16000, "s16", "mono")
    y = load_audio(path, 16000)
    assert len(y) == 16000 and abs(peak_hz(y, 16000) - 440) <= 2.0
    assert 0.4 < np.abs(y).max() < 0.7


@pytest.mark.skipif(not ASTERISK_DIR.is_dir(), reason="Debian package asterisk-core-sounds-en-g722 not installed")
def test_real_asterisk_g722_prompt():
    path = ASTERISK_DIR / "digits" / "5.g722"
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and 0.3 < len(y) / 16000 < 3.0
    assert 0.05 < np.abs(y).max() <= 1.0 and np.isfinite(y).all()
    z = load_audio(path, 22050)
    assert abs(len(z) - len(y) * 22050 / 16000) <= 1


@pytest.mark.parametrize("fmt,layout,raw,expected", [
    ("s16", "stereo", np.array([[16384, -8192, -32768, 0]], np.int16), [[0.5, -1.0], [-0.25, 0.0]]),
    ("s16p", "stereo", np.array([[16384, -32768], [-8192, 0]], np.int16), [[0.5, -1.0], [-0.25, 0.0]]),
    ("s32", "stereo", np.array([[2 ** 30, -(2 ** 29), -(2 ** 31), 0]], np.int32), [[0.5, -1.0], [-0.25, 0.0]]),
    ("fltp", "stereo", np.array([[0.5, -1.0], [-0.25, 0.0]], np.float32), [[0.5, -1.0], [-0.25, 0.0]]),
    ("flt", "mono", np.array([[0.5, -0.25]], np.float32), [[0.5, -0.25]]),
    ("u8", "mono", np.array([[192, 64, 128]], np.uint8), [[0.5, -0.5, 0.0]]),
])
def test_pyav_frames_are_scaled_and_deinterleaved(fmt, layout, raw, expected):
    frame = av.AudioFrame.from_ndarray(raw, format=fmt, layout=layout)
    frame.sample_rate = 16000
    out = _frame_to_float(frame)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.array(expected, np.float32), atol=1e-7)


def test_pyav_path_reads_packed_int32_wav(tmp_path):
    # Exercise _read_pyav directly on a format soundfile would otherwise take first.
    x = np.stack([sine(440, 0.2, 16000, 0.5), sine(440, 0.2, 16000, -0.25)])
    sf.write(tmp_path / "s32.wav", x.T, 16000, subtype="PCM_32")
    data, rate = _read_pyav(tmp_path / "s32.wav")
    assert rate == 16000 and data.shape == x.shape
    np.testing.assert_allclose(data, x, atol=1e-6)


# ---- broken files --------------------------------------------------------------------------------

def test_truncated_header_is_an_error_naming_the_file(tmp_path):
    sf.write(tmp_path / "ok.wav", sine(440, 0.5, 16000), 16000, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes((tmp_path / "ok.wav").read_bytes()[:30])
    with pytest.raises(AudioError, match="cut.wav") as info:
        load_audio(tmp_path / "cut.wav", 16000)
    assert info.value.reason == "unreadable"


def test_truncated_data_keeps_the_samples_that_are_there(tmp_path):
    x = sine(440, 1.0, 16000)
    sf.write(tmp_path / "ok.wav", x, 16000, subtype="PCM_16")
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:44 + 2 * 4000])  # header + 4000 samples
    y = load_audio(tmp_path / "cut.wav", 16000)
    assert len(y) == 4000
    np.testing.assert_allclose(y, x[:4000], atol=1 / 32768 + 1e-7)


def test_zero_byte_and_garbage_files(tmp_path):
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "junk.mp3").write_bytes(b"this is not audio at all, just text\n" * 300)
    with pytest.raises(AudioError, match="zero.wav") as info:
        load_audio(tmp_path / "zero.wav", 16000)
    assert info.value.reason == "empty"
    with pytest.raises(AudioError, match=r"junk\.mp3.*cannot decode"):
        load_audio(tmp_path / "junk.mp3", 16000)
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav", 16000)


def test_header_only_wav_is_empty(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="empty.wav") as info:
        load_audio(tmp_path / "empty.wav", 16000)
    assert info.value.reason == "empty"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = sine(440, 0.2, 16000)
    x[100] = bad
    sf.write(tmp_path / "nf.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nf\.wav: 1 non-finite") as info:
        load_audio(tmp_path / "nf.wav", 16000)
    assert info.value.reason == "non-finite"


# ---- writing -------------------------------------------------------------------------------------

def test_save_wav_pcm16_clips_creates_dirs_and_leaves_no_temp(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "deep" / "er" / "out.wav"
    x = np.array([0.0, 0.5, 1.5, -2.0, -0.25], np.float32)
    save_wav(path, x, 16000)
    info = sf.info(path)
    assert (info.subtype, info.samplerate, info.channels, info.frames) == ("PCM_16", 16000, 1, 5)
    y, _ = sf.read(path, dtype="int16")
    assert y.tolist() == [0, 16384, 32767, -32768, -8192]  # libsndfile: -1 -> -32768
    save_wav(path, torch.full((3,), 0.25), 8000)  # overwrite, from a tensor
    assert sf.info(path).frames == 3 and sf.info(path).samplerate == 8000
    assert os.listdir(path.parent) == ["out.wav"]


def test_save_wav_refuses_nan_and_keeps_old_file(tmp_path):
    path = tmp_path / "keep.wav"
    save_wav(path, np.full(10, 0.1, np.float32), 16000)
    with pytest.raises(AudioError, match="non-finite"):
        save_wav(path, np.array([0.1, np.nan], np.float32), 16000)
    assert sf.info(path).frames == 10 and os.listdir(tmp_path) == ["keep.wav"]

"""The mel side of `vqkit eval`: which pieces of a file are scored, and the vocoded examples.

Files up to LONG_SECONDS are scored whole, with the same checks as training data. Longer files are
read block by block and scored as consecutive segments of SEGMENT_SECONDS (each encoded, decoded,
vocoded and measured on its own), so an hour-long file costs the memory of one segment.

Vocoded metrics (MR-STFT, SI-SDR, PESQ-WB, STOI) compare the vocoded original with the vocoded
reconstruction: `vocoded_*` for the model's output (refined when there is a refiner) and, with a
refiner, `draft_vocoded_*` for the decoder draft, so the report shows what the refiner adds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

LONG_SECONDS = 120.0
SEGMENT_SECONDS = 30.0


def file_seconds(path: Path) -> float | None:
    """Seconds of audio from the file's header (None when the header does not say)."""
    try:
        import soundfile as sf

        return float(sf.info(str(path)).duration)
    except Exception:
        pass
    try:
        import av

        with av.open(str(path)) as c:
            return float(c.duration) / 1e6 if c.duration else None
    except Exception:
        return None


def mel_pieces(tok, path: Path) -> tuple[Iterator[tuple[str, torch.Tensor]] | None, str | None, str]:
    """(iterator of (label, log-mel), None, "") or (None, skip reason, detail) for one file."""
    cfg = tok.config
    seconds = file_seconds(path)
    if seconds is None or seconds <= LONG_SECONDS:
        from ..data.audio_corpus import load_one_clip

        r = load_one_clip(path, tok.frontend, cfg.data.min_seconds, cfg.data.max_seconds)
        return (iter([("", r.clip.mel)]) if r.clip is not None else None), r.reason, r.detail
    if cfg.data.max_seconds is not None and seconds > cfg.data.max_seconds:
        return None, "too long", f"{path}: {seconds:.1f} s > max_seconds={cfg.data.max_seconds}"
    return _segments(tok, path), None, ""


def _segments(tok, path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from ..models.audio_files import mel_of_file

    fps = tok.config.model.mel.frames_per_second
    size = int(SEGMENT_SECONDS * fps)
    pending, start = [], 0
    for piece in mel_of_file(tok, path):
        pending.append(piece)
        have = sum(p.shape[-1] for p in pending)
        while have >= size:
            mel = torch.cat(pending, -1)
            yield _label(start, size, fps), mel[:, :size]
            pending, start, have = [mel[:, size:]], start + size, have - size
    if pending and sum(p.shape[-1] for p in pending):
        mel = torch.cat(pending, -1)
        yield _label(start, mel.shape[-1], fps), mel


def _label(start: int, frames: int, fps: float) -> str:
    return f" [{start / fps:.0f}-{(start + frames) / fps:.0f} s]"


class MelExamples:
    """Writes pictures and audio for the first examples; scores vocoded pairs."""

    def __init__(self, out_dir: Path, tok, vocoder, max_vocoded: int | None):
        self.out_dir, self.tok, self.vocoder, self.max_vocoded = out_dir, tok, vocoder, max_vocoded
        self.examples: list[dict] = []
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.unavailable: dict[str, str] = {}

    def _score(self, prefix: str, est, ref) -> None:
        from .audio_metrics import audio_pair_metrics

        for k, v in audio_pair_metrics(est, ref, self.vocoder.sample_rate).items():
            key = f"{prefix}vocoded_{k}"
            if isinstance(v, (int, float)):
                self.sums[key] = self.sums.get(key, 0.0) + float(v)
                self.counts[key] = self.counts.get(key, 0) + 1
            elif isinstance(v, str):
                self.unavailable[key] = v

    def add(self, i: int, rel: str, path: Path, ex: dict, keep: bool, whole: bool = True) -> None:
        """whole: `ex` is the whole file (its source audio is written beside), not a segment of it."""
        from ..frontends.audio_io import load_audio, save_wav
        from .plots import save_spectrograms

        refined = "refined" in ex
        vocode = self.vocoder is not None and (self.max_vocoded is None or i < self.max_vocoded)
        if vocode:
            voc = lambda name: self.vocoder(torch.from_numpy(ex[name])).numpy()  # noqa: E731
            ref, est = voc("original"), voc("refined" if refined else "draft")
            self._score("", est, ref)
            draft = voc("draft") if refined else None
            if draft is not None:
                self._score("draft_", draft, ref)
        if not keep:
            return
        stem = f"clip{i:02d}"
        save_spectrograms(self.out_dir / f"{stem}.png", ex, title=rel)
        sr = self.tok.config.model.mel.sample_rate
        audio = []
        if whole:   # a segment's source audio would mean reading the whole long file
            save_wav(self.out_dir / f"{stem}_original.wav", load_audio(path, sr), sr)
            audio.append({"src": f"{stem}_original.wav", "label": "original"})
        if vocode:
            save_wav(self.out_dir / f"{stem}_vocoded.wav", ref, self.vocoder.sample_rate)
            save_wav(self.out_dir / f"{stem}_reconstruction.wav", est, self.vocoder.sample_rate)
            audio += [{"src": f"{stem}_vocoded.wav", "label": "original mel, vocoded"},
                      {"src": f"{stem}_reconstruction.wav", "label": "reconstruction"}]
            if draft is not None:
                save_wav(self.out_dir / f"{stem}_draft.wav", draft, self.vocoder.sample_rate)
                audio.append({"src": f"{stem}_draft.wav", "label": "decoder draft (before the refiner)"})
        self.examples.append({"title": rel, "images": [{"src": f"{stem}.png", "caption": "original / draft / refined"}],
                              "audio": audio})

    def result(self) -> dict:
        out = {k: v / self.counts[k] for k, v in self.sums.items()}
        out.update(self.unavailable)
        if self.counts:
            out["vocoded_clips"] = max(self.counts.values())
        return out


def write_mel_example(out_dir: Path, stem: str, signals: dict[str, torch.Tensor], title: str, vocoder=None) -> dict:
    """One report example from named decoded log-mels: one spectrogram picture and, with a
    vocoder, a WAV per signal."""
    from ..frontends.audio_io import save_wav
    from .plots import save_spectrograms

    save_spectrograms(out_dir / f"{stem}.png", {k: v.numpy() for k, v in signals.items()}, title=title)
    audio = []
    if vocoder is not None:
        for name, mel in signals.items():
            wav = f"{stem}_{name.replace(' ', '_')}.wav"
            save_wav(out_dir / wav, vocoder(mel).numpy(), vocoder.sample_rate)
            audio.append({"src": wav, "label": name})
    return {"title": title, "images": [{"src": f"{stem}.png", "caption": " / ".join(signals)}], "audio": audio}

"""Report folders for a tokenizer on held-out data. Mel tokenizers:

    metrics.json                 numbers + what produced them (checkpoint id, data list hash, settings)
    clipNN.png                   original / draft / refined log-mel
    clipNN_original.wav          the source audio (at the model's sample rate)
    clipNN_vocoded.wav           the original mel through the vocoder: the ceiling for the reconstruction
    clipNN_reconstruction.wav    tokens -> refined mel -> vocoder
    index.html                   all of it on one page (relative links, no network)

Image tokenizers: metrics.json, reconstructions.png (originals / draft / refined rows), index.html.
"""
from __future__ import annotations

import hashlib
import html
import json
import time
from pathlib import Path

import torch

from .mel_eval import evaluate_mels
from .plots import save_spectrograms


def _record(tok, corpus, metrics: dict, checkpoint, **extra) -> dict:
    rel = corpus.relative_paths()
    m = tok.config.model
    return {
        "metrics": metrics, **extra,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "tokenizer_id": tok.tokenizer_id,
        "data": {"root": str(corpus.root), "files": len(rel), "skipped": corpus.skipped,
                 "file_list_sha256": hashlib.sha256("\n".join(rel).encode()).hexdigest()[:16]},
        "settings": {"modality": m.modality, "mel" if m.modality == "mel" else "image":
                     (m.mel if m.modality == "mel" else m.image).__dict__, "quantizer": m.quantizer.__dict__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_image_report(tok, corpus, out_dir: Path, n_examples: int = 8, checkpoint=None,
                       crop: int | None = 512) -> dict:
    from .image_eval import evaluate_images, write_image_samples

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.eval()
    metrics, examples = evaluate_images(tok, list(corpus.images), crop=crop)
    write_image_samples(out_dir, examples, max_images=n_examples)
    record = _record(tok, corpus, metrics, checkpoint, crop=crop,
                     units="PSNR/SSIM on [0, 255] with data range 255; mse/l1 on [-1, 1]")
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=1, default=str))
    (out_dir / "index.html").write_text(_page(record, '<img src="reconstructions.png" alt="reconstructions">'))
    return metrics


def write_mel_report(tok, corpus, out_dir: Path, vocoder, n_examples: int = 8, checkpoint=None) -> dict:
    from ..frontends.audio_io import load_audio, save_wav

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.eval()
    metrics, examples = evaluate_mels(tok, [c.mel for c in corpus.clips])
    rel = corpus.relative_paths()
    rows = []
    sr = tok.config.model.mel.sample_rate
    for i, (clip, ex) in enumerate(list(zip(corpus.clips, examples))[:n_examples]):
        stem = f"clip{i:02d}"
        save_spectrograms(out_dir / f"{stem}.png", ex, title=rel[i])
        final = "refined" if "refined" in ex else "draft"
        save_wav(out_dir / f"{stem}_original.wav", load_audio(clip.path, sr), sr)
        save_wav(out_dir / f"{stem}_vocoded.wav", vocoder(torch.from_numpy(ex["original"])).numpy(), vocoder.sample_rate)
        save_wav(out_dir / f"{stem}_reconstruction.wav", vocoder(torch.from_numpy(ex[final])).numpy(),
                 vocoder.sample_rate)
        rows.append((stem, rel[i]))
    record = _record(tok, corpus, metrics, checkpoint, vocoder=vocoder.name,
                     units="mel errors in natural-log mel units, averaged over frames and mel bins")
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=1, default=str))
    (out_dir / "index.html").write_text(_page(record, _audio_sections(rows)))
    return metrics


def _audio_sections(rows: list[tuple[str, str]]) -> str:
    items = []
    for stem, name in rows:
        players = "".join(f'<figure><figcaption>{label}</figcaption><audio controls src="{stem}_{kind}.wav"></audio></figure>'
                          for kind, label in (("original", "original"), ("vocoded", "original mel, vocoded"),
                                              ("reconstruction", "reconstruction")))
        items.append(f'<section><h3>{html.escape(name)}</h3><img src="{stem}.png" alt="{html.escape(name)}">'
                     f'<div class="players">{players}</div></section>')
    return "".join(items)


def _page(record: dict, body: str) -> str:
    m = record["metrics"]
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" if isinstance(v, float)
                    else f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in m.items())
    extra = f", vocoder {record['vocoder']}" if "vocoder" in record else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>vqkit report</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "td{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}.players{display:flex;gap:1em}"
        "figure{margin:0}</style></head><body>"
        f"<h1>vqkit report: {html.escape(str(record['checkpoint']))}</h1>"
        f"<p>tokenizer {record['tokenizer_id']}, {record['data']['files']} held-out files from "
        f"{html.escape(record['data']['root'])}{extra}. {html.escape(record['units'])}.</p>"
        f"<table>{table}</table>{body}</body></html>")

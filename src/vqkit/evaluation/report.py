"""Report folder for a mel tokenizer on held-out audio:

    metrics.json                 numbers + what produced them (checkpoint id, data list hash, settings)
    clipNN.png                   original / draft / refined log-mel
    clipNN_original.wav          the source audio (at the model's sample rate)
    clipNN_vocoded.wav           the original mel through the vocoder: the ceiling for the reconstruction
    clipNN_reconstruction.wav    tokens -> refined mel -> vocoder
    index.html                   all of it on one page (relative links, no network)
"""
from __future__ import annotations

import hashlib
import html
import json
import time
from pathlib import Path

import torch

from ..frontends.audio_io import load_audio, save_wav
from .mel_eval import evaluate_mels
from .plots import save_spectrograms


def write_mel_report(tok, corpus, out_dir: Path, vocoder, n_examples: int = 8, checkpoint=None) -> dict:
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
    record = {
        "metrics": metrics,
        "units": "mel errors in natural-log mel units, averaged over frames and mel bins",
        "checkpoint": str(checkpoint) if checkpoint else None,
        "tokenizer_id": tok.tokenizer_id,
        "data": {"root": str(corpus.root), "files": len(rel), "skipped": corpus.skipped,
                 "file_list_sha256": hashlib.sha256("\n".join(rel).encode()).hexdigest()[:16]},
        "vocoder": vocoder.name,
        "settings": {"mel": tok.config.model.mel.__dict__, "quantizer": tok.config.model.quantizer.__dict__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=1, default=str))
    (out_dir / "index.html").write_text(_html(record, rows))
    return metrics


def _html(record: dict, rows: list[tuple[str, str]]) -> str:
    m = record["metrics"]
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" if isinstance(v, float)
                    else f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in m.items())
    items = []
    for stem, name in rows:
        players = "".join(f'<figure><figcaption>{label}</figcaption><audio controls src="{stem}_{kind}.wav"></audio></figure>'
                          for kind, label in (("original", "original"), ("vocoded", "original mel, vocoded"),
                                              ("reconstruction", "reconstruction")))
        items.append(f'<section><h3>{html.escape(name)}</h3><img src="{stem}.png" alt="{html.escape(name)}">'
                     f'<div class="players">{players}</div></section>')
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>vqkit report</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "td{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}.players{display:flex;gap:1em}"
        "figure{margin:0}</style></head><body>"
        f"<h1>vqkit report: {html.escape(str(record['checkpoint']))}</h1>"
        f"<p>tokenizer {record['tokenizer_id']}, {record['data']['files']} held-out clips from "
        f"{html.escape(record['data']['root'])}, vocoder {record['vocoder']}. {html.escape(record['units'])}.</p>"
        f"<table>{table}</table>{''.join(items)}</body></html>")

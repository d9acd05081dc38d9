"""A tokenizer's model card for the Hugging Face Hub (README.md): what it is (modality, backbone,
quantiser, parameters, codebook, rates), what it was trained and evaluated on where its run recorded
that (io/run_records.py), and how to load it with vqkit. io/hub.py stages and uploads it."""
from __future__ import annotations

import math
from pathlib import Path

from ..io.hub import push, render_card, stage, table, training_data_text
from ..io.run_records import checkpoint_of, checkpoint_step, corpus_licence, eval_report, training_data


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0




def _number(v) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))   # e.g. bits per image: 10240, not 1.024e+04
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def rate_rows(tok) -> list[tuple[str, object]]:
    """Mels: tokens and bits per second; images: downsample factor and the grid of a 256 px image."""
    if tok.frontend is not None:
        mel = tok.config.model.mel
        rows = [("audio", f"{mel.sample_rate} Hz, {mel.n_mels} mels, hop {mel.hop_length} "
                          f"({mel.frames_per_second:.4g} frames/s), fmax {mel.fmax}"),
                ("token rate", f"{tok.tokens_per_second:.4g} tokens/s = {tok.bits_per_second:.4g} bits/s")]
        by_stages = tok.bits_per_second_by_stages()
        if by_stages:
            rows.append(("bits/s from the first k stages", ", ".join(f"k={k}: {v:.4g}" for k, v in by_stages.items())))
        return rows
    grid = tok.token_grid(256, 256)
    return [("downsample", f"{tok.downsample} (a 256x256 image -> token grid {list(grid)}, "
                           f"{math.prod(grid) * tok.bits_per_token:.0f} bits)")]


def tokenizer_card(tok, repo_id: str, source: str | Path | None = None, license: str | None = None,
                   data: str | None = None) -> str:
    """README.md for `tok` as `repo_id`. `source`: the checkpoint or run folder it came from, whose
    records (steps, `vqkit eval` report, a corpus manifest's licence) the card quotes; `license`: the
    weights' licence (front matter; "other" when not given); `data`: a line on the training data,
    added before what the run recorded (training_data.json)."""
    m = tok.config.model
    q = m.quantizer
    ckpt = checkpoint_of(source) if source is not None else None
    step = checkpoint_step(ckpt) if ckpt is not None else None
    report = eval_report(ckpt, tok.tokenizer_id) if ckpt is not None else None
    corpus = corpus_licence(report["data"]["root"]) if report and isinstance(report.get("data"), dict) else None
    parts = {"encoder": _count(tok.encoder), "quantiser": _count(tok.quantizer), "decoder": _count(tok.decoder),
             "refiner": _count(tok.refiner)}
    model = table([
        ("modality", "mel spectrogram (audio)" if m.modality == "mel" else f"image ({m.image.channels} channels)"),
        ("backbone", f"{m.backbone.kind} {getattr(m.backbone, 'channels', '')}, downsample {m.backbone.downsample}"
                     + (", causal (streams)" if m.causal else "")),
        ("quantiser", q.describe()),
        ("codebook size", f"{tok.codebook_size} ({tok.bits_per_token:.4g} bits per token, "
                          f"{tok.tokens_per_position} per position)"),
        *rate_rows(tok),
        ("refiner", m.refiner.mode if m.refiner is not None else "none"),
        ("parameters", f"{_count(tok):,} ({_count(tok) / 1e6:.3g}M; "
                       + ", ".join(f"{k} {v:,}" for k, v in parts.items() if v) + ")"),
        ("preset / config name", tok.config.name),
        ("tokenizer id", f"`{tok.tokenizer_id}` (hash of the weights; token files record it)"),
        ("trained steps", step),
    ])
    training = training_data_text(training_data(ckpt, step) if ckpt is not None else None, data,
                                  "Not recorded with this checkpoint (it has no run folder with a training_data.json).")
    metrics = ""
    if report:
        d = report["data"] if isinstance(report.get("data"), dict) else {}
        rows = [(k, _number(v)) for k, v in report["metrics"].items() if isinstance(v, (int, float))]
        metrics = (f"`vqkit eval` on {d.get('files', '?')} held-out files ({d.get('root', '?')}, file list "
                   f"sha256 {d.get('file_list_sha256', '?')}), {report.get('created', '')}:\n\n"
                   + table(rows, ("metric", "value")))
        if report.get("units"):
            metrics += f"\n\nUnits: {report['units']}"
        if corpus:
            metrics += (f"\n\nThe corpus of the held-out files ({corpus['folder']}/manifest.json) states its "
                        f"source and licence: {corpus['source']}, {corpus['licence']}.")
    kind = "mel" if m.modality == "mel" else "image"
    use = (f"```python\nfrom vqkit import Tokenizer\n\ntok = Tokenizer.from_pretrained(\"{repo_id}\")\n"
           + ("mel = tok.frontend(audio)   # (samples,) at the model's sample rate -> log-mel\n"
              "tokens = tok.encode(mel)    # integer tokens\nmel_back = tok.decode(tokens)\n"
              if kind == "mel" else
              "tokens = tok.encode(image)  # image (C, H, W) in [-1, 1] -> token grid\n"
              "image_back = tok.decode(tokens)\n")
           + f"```\n\nOr on the command line: `vqkit info {repo_id}`, `vqkit encode {repo_id} INPUT -o OUT`, "
             f"`vqkit decode {repo_id} TOKENS -o OUT`.")
    tags = ["tokenizer", "vector-quantization", "audio" if kind == "mel" else "image",
            *(["mel-spectrogram"] if kind == "mel" else []), q.kind]
    return render_card(repo_id, f"A vqkit {kind} tokenizer: {q.describe()}, {m.backbone.kind} backbone.",
                       [("Model", model), ("Training data", training), ("Held-out metrics", metrics), ("Use", use)],
                       license, tags)


def stage_tokenizer(tok, directory: str | Path, repo_id: str, **card) -> Path:
    """Write what push_to_hub uploads (config.yaml, model.safetensors, README.md) into `directory`."""
    return stage(directory, tok.save_pretrained, tokenizer_card(tok, repo_id, **card))


def push_tokenizer(tok, repo_id: str, source=None, license=None, data=None, **upload):
    return push(tok.save_pretrained, tokenizer_card(tok, repo_id, source, license, data), repo_id, **upload)

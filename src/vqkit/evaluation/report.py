"""`vqkit eval`: stream a folder of held-out files through a tokenizer and write a report folder.

    metrics.json        every number, and what produced it: checkpoint, tokenizer id (weights hash),
                        data file-list hash, skipped files, metric versions, settings
    index.html          one page, no network: metrics, provenance, usage histogram, training
                        curves, and per example pictures (and, for audio, players)
    usage.png, curves.png
    mels:   clipNN.png (original / draft / refined), clipNN_original.wav (the source audio),
            clipNN_vocoded.wav (original mel through the vocoder: the ceiling), clipNN_reconstruction.wav,
            clipNN_draft.wav (the decoder draft, with a refiner); long files scored in segments
    images: reconstructions.png (originals / drafts / refined rows), exampleNN.png

Files are read GROUP_FILES at a time and run through the model together (padded batches, each
file's outputs equal to running it alone, models/batched.py); long files go alone, segment by
segment: memory stays bounded whatever the folder size. Nothing here is random, so the same
checkpoint and data give the same numbers.
"""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..version import __version__
from ..io.files import WriteError, atomic_write
from ..io.paths import check_output_folder, output_folder, refuse_overlap
from ..io.run_records import file_list_hash
from ..io.weights import resolve_checkpoint_dir

GROUP_FILES = 16   # files whose outputs are computed in one batched call


def _run_dir(checkpoint: Path) -> Path | None:
    """The training run a checkpoint belongs to (for its metrics.jsonl), if any."""
    for d in (checkpoint, *checkpoint.parents[:3]):
        if (d / "metrics.jsonl").is_file():
            return d
    return None


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"vqkit": __version__, "torch": torch.__version__}
    for name in ("numpy", "scipy", "librosa", "pesq", "pystoi", "scikit-image"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def evaluate_folder(tok, modality, folder: str | Path, out_dir: str | Path, n_examples: int = 8, vocoder=None,
                    max_vocoded: int | None = None, lpips=None, inception=None, crop: int | None = 512,
                    checkpoint: str | Path | None = None, log: Callable[[str], None] = print,
                    progress: bool = True, max_pixels: int | None = None) -> dict:
    """Evaluate every usable file under `folder`; write the report into `out_dir`; return the record.
    modality: the tokenizer's (vqkit.modalities), which reads the files and scores and shows them.
    A report folder this call creates is removed again when the evaluation fails."""
    from .html_report import render_report
    from .report_plots import training_curves, usage_histogram

    folder, out_dir = Path(folder), Path(out_dir)
    refuse_overlap(out_dir, "--out", [("--data", folder)])   # a rerun must not evaluate its own outputs
    check_output_folder(out_dir, "--out")
    files = modality.find_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no {modality.noun} files found")
    with output_folder(out_dir):   # removed again if this call created it and then fails
        tok.eval()
        load = modality.pieces(tok, max_pixels)
        acc, writer = modality.report_parts(tok, out_dir, crop=crop, lpips=lpips, inception=inception,
                                            vocoder=vocoder, max_vocoded=max_vocoded)
        used, skipped = [], {}
        scored = 0

        def skip(reason: str, detail: str) -> None:
            skipped[reason] = skipped.get(reason, 0) + 1
            log(f"skipping ({reason}) {detail}")

        def score(path: Path, rel: str, pieces, computed=None) -> None:
            """Count a file's pieces (computed: its one piece's outputs, from a batch); a failure skips the
            file. The report folder failing is not this file's: it stops the evaluation."""
            nonlocal scored
            try:
                for label, x in pieces:
                    example = acc.add_computed(computed if computed is not None else acc.compute([x])[0])
                    writer.add(scored, rel + label, path, example, keep=scored < n_examples, whole=not label)
                    scored += 1
            except WriteError:
                raise
            except Exception as e:   # this file only (e.g. MemoryError on a huge one): skip, count and name it
                return skip("failed", f"{path}: {type(e).__name__}: {e}")
            used.append(rel)

        def flush(group: list) -> None:
            """Files of one piece each, their outputs computed in one batched call (file by file if it fails)."""
            try:
                computed = acc.compute([x for _, _, (_, x) in group])
            except Exception:
                computed = [None] * len(group)
            for (path, rel, piece), c in zip(group, computed):
                score(path, rel, [piece], c)
            group.clear()

        group: list = []
        for path in tqdm(files, desc="eval", disable=not progress, dynamic_ncols=True):
            pieces, reason, detail = load(path)
            rel = path.relative_to(folder).as_posix()
            if pieces is None:
                flush(group)
                skip(reason, detail)
                continue
            first, second = next(pieces, None), next(pieces, None)
            if first is not None and second is None:   # one piece (most files): it joins a batch
                group.append((path, rel, first))
                if len(group) >= GROUP_FILES:
                    flush(group)
                continue
            flush(group)   # a long file in segments goes alone, in order
            score(path, rel, itertools.chain([p for p in (first, second) if p is not None], pieces))
        flush(group)
        if not used:
            raise ValueError(f"{folder}: none of {len(files)} files is usable ({skipped})")
        metrics = {**acc.result(), **writer.result()}
        usage_png = usage_histogram(acc.code_counts.numpy(), out_dir / "usage.png").name
        ckpt = resolve_checkpoint_dir(checkpoint) if checkpoint else None
        run = _run_dir(Path(checkpoint)) if checkpoint else None
        curves = None
        if run is not None:
            from ..io.metrics_log import read_metrics

            path = training_curves(read_metrics(run), out_dir / "curves.png")
            curves = path.name if path else None
        record = {
            "metrics": metrics,
            "units": modality.units,
            "checkpoint": str(ckpt) if ckpt else None,
            "tokenizer_id": tok.tokenizer_id,
            "data": {"root": str(folder), "files": len(used), "skipped": skipped,
                     "file_list_sha256": file_list_hash(used)},
            "metric_versions": _versions(),
            "settings": {"config": tok.config.name, "modality": tok.modality, "crop": modality.report_crop(crop),
                         "vocoder": getattr(vocoder, "name", None), "max_vocoded": max_vocoded,
                         "lpips": lpips is not None, "rfid": inception is not None},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        atomic_write(out_dir / "metrics.json", json.dumps(record, indent=1, default=str))
        # pages that live inside the report folder (e.g. the demo's token prior) are linked from it
        pages = sorted(p.parent.name for p in Path(out_dir).glob("*/index.html"))
        render_report(out_dir, record, writer.examples, usage_png, curves, pages=pages)
        return record

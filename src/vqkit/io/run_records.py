"""What a training run recorded about a checkpoint, for its model card and `vqkit info`: the steps
trained (train_state.json), the data it was trained on (training_data.json, written here when a run
starts or resumes), held-out records (metrics.jsonl), the held-out metrics of `vqkit eval`
(report/metrics.json) and the data it was evaluated on, with the licence a corpus states in its
manifest.json. Only what the files say: a missing or unreadable record is left out, never
guessed. Ground floor."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .files import TooLargeError, atomic_write, read_limited

DATA_RECORD = "training_data.json"


def _json(path: Path, what: str, limit: int = 2**24):
    try:
        return json.loads(read_limited(path, limit, what))
    except (OSError, ValueError, TooLargeError):
        return None


def _around(checkpoint: Path) -> list[Path]:
    """The checkpoint folder and the folders above it that may be its run (run/checkpoints/step_N)."""
    return [checkpoint, *list(checkpoint.parents)[:2]]


def run_dir(checkpoint: Path) -> Path | None:
    """The training run (the folder with metrics.jsonl) a checkpoint folder belongs to, if any."""
    return next((d for d in _around(checkpoint) if (d / "metrics.jsonl").is_file()), None)


def checkpoint_of(source: str | Path) -> Path:
    """The checkpoint folder of a checkpoint or run folder (a run's latest), or `source` itself."""
    from .weights import resolve_checkpoint_dir

    try:
        return resolve_checkpoint_dir(Path(source))
    except (OSError, ValueError):
        return Path(source)


def _records(run: Path) -> list[dict]:
    """metrics.jsonl's records (lines cut short by a crash are skipped)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            out.append(record)
    return out


def checkpoint_step(checkpoint: Path) -> int | None:
    """The step a training checkpoint was saved at (its train_state.json); None for a checkpoint
    without one (save_pretrained's, or the export of another tool)."""
    state = _json(checkpoint / "train_state.json", "training state file", 2**26)
    if not isinstance(state, dict):
        return None
    for entry in state.get("__dict__", []):
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == ["str", "step"]:
            return entry[1]
    return None


def last_record(run: Path, split: str, at_most: int | None = None) -> dict | None:
    """The last record of one split (e.g. "heldout") in metrics.jsonl, up to step `at_most` (the
    checkpoint's: later records are of later weights)."""
    found = [r for r in _records(run) if r.get("split") == split and (at_most is None or r["step"] <= at_most)]
    return max(found, key=lambda r: r["step"]) if found else None


def eval_report(checkpoint: Path, model_id: str) -> dict | None:
    """The report/metrics.json of `vqkit eval` beside the checkpoint or its run, if it scored these very
    weights (its tokenizer_id is `model_id`): a report of another checkpoint of the run is not theirs."""
    for d in _around(checkpoint):
        record = _json(d / "report" / "metrics.json", "eval report")
        if (isinstance(record, dict) and record.get("tokenizer_id") == model_id
                and isinstance(record.get("metrics"), dict)):
            return record
    return None


def corpus_licence(root: str | Path) -> dict | None:
    """{"source", "licence"} of a corpus folder (or the split folder of one, e.g. demo/heldout) whose
    manifest.json states them, as vqkit's demo corpora do; None when no manifest says."""
    root = Path(root)
    for d in (root, root.parent):
        manifest = _json(d / "manifest.json", "corpus manifest")
        if not isinstance(manifest, dict):
            continue
        licence = manifest.get("licence")
        if licence is None and isinstance(manifest.get("images"), dict):   # demo images: one per photograph
            found = sorted({str(i.get("licence")) for i in manifest["images"].values() if isinstance(i, dict)})
            licence = "; ".join(found) if found else None
        if licence:
            return {"source": manifest.get("source"), "licence": licence, "folder": str(d)}
    return None


def file_list_hash(relative_paths: list[str]) -> str:
    """A short hash naming a file list (its '/'-separated relative paths, in order)."""
    return hashlib.sha256("\n".join(relative_paths).encode()).hexdigest()[:16]


def folder_record(root: str | Path, relative_paths: list[str], skipped: dict | None = None,
                  summary: str | None = None, split: str | None = None) -> dict:
    """What a run records of the files it read from one folder: where, how many, which (a hash of
    the list), what was skipped and why, and the licence the corpus manifest states (or None).
    split: how these files were picked from the folder, when not all of it."""
    record = {"root": str(Path(root).resolve()), "files": len(relative_paths), "skipped": dict(skipped or {}),
              "file_list_sha256": file_list_hash(relative_paths), "licence": corpus_licence(root)}
    if summary:
        record["summary"] = summary
    if split:
        record["split"] = split
    return record


def hash_split_notes(fraction: float, what: str = "files") -> tuple[str, str]:
    """folder_record's `split` of the training and the held-out part of a folder split by file-name
    hash (data.valid_fraction `fraction`); `what`: the files' name ("files", "token files")."""
    how = f"data.valid_fraction {fraction:g}"
    return f"the {what} a file-name hash does not hold out ({how})", f"held out by file-name hash ({how})"


def record_training_data(run: Path, step: int, data: dict) -> None:
    """Append {"from_step": step, **data} (data: {"train": folder_record, "heldout": ...}) to the
    run's training_data.json, unless the last entry already says the same: a resumed run on other
    files gets a second entry, from the step it resumed at."""
    path = Path(run) / DATA_RECORD
    recorded = _data_entries(path) or []
    entries = [e for e in recorded if e["from_step"] < step]   # a restart from earlier replaces later ones
    if not (entries and {k: v for k, v in entries[-1].items() if k != "from_step"} == data):
        entries.append({"from_step": step, **data})
    if entries != recorded:
        atomic_write(path, json.dumps({"entries": entries}, indent=1) + "\n")


def _data_entries(path: Path) -> list[dict] | None:
    record = _json(path, "training data record")
    if not (isinstance(record, dict) and isinstance(record.get("entries"), list)):
        return None
    return [e for e in record["entries"] if isinstance(e, dict) and isinstance(e.get("from_step"), int)]


def training_data(folder: Path, at_most: int | None = None) -> list[dict] | None:
    """The entries of training_data.json in a run folder or beside a checkpoint of it, those from
    step `at_most` or before (a checkpoint's step: later entries are of later training); None when
    no readable record is there (a run from before the record existed, a save_pretrained folder)."""
    for d in _around(Path(folder)):
        entries = _data_entries(d / DATA_RECORD)
        if entries is not None:
            return [e for e in entries if at_most is None or e["from_step"] <= at_most]
    return None

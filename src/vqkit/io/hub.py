"""The Hugging Face Hub, for every kind of checkpoint (tokenizers and token priors alike): a repo id
resolved to a local snapshot folder through huggingface_hub (its cache, revisions, offline mode),
and a staged folder (checkpoint files + model card) uploaded as one commit. Ground floor: imports
nothing above vqkit.io; what a card says is written by the floors that know the model.

Telling paths and repo ids apart: an existing local path always wins; otherwise a string of the form
`namespace/name` is a repo id; otherwise it is a missing local path (resolve_checkpoint_dir's error).
Errors name the repo and the problem (not cached while offline, no such revision, a file missing
from the repo) instead of surfacing huggingface_hub's own exceptions.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Callable

import yaml

from .files import atomic_write

CARD_NAME = "README.md"
# namespace/name, each part ASCII letters, digits, '_', '-', '.' (what the Hub accepts; its own
# validator then refuses '--', '..' and the like with its own words).
_REPO_ID = re.compile(r"[A-Za-z0-9_.\-]{1,96}/[A-Za-z0-9_.\-]{1,96}")


class HubError(FileNotFoundError):
    """A hub repo that cannot give a checkpoint (not cached, no such repo or revision, a file
    missing), or an upload that failed; the message starts with the repo id."""


def is_repo_id(path: str | Path) -> bool:
    """True for a `namespace/name` string that is not an existing local path."""
    text = str(path)
    return bool(_REPO_ID.fullmatch(text)) and not Path(text).exists()


def _offline(local_files_only: bool) -> bool:
    from huggingface_hub import constants

    offline = getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)   # a function since 1.0
    return bool(local_files_only or offline())


def _cached_revisions(storage: Path) -> list[str]:
    """Branch/tag names (refs/) and commit hashes (snapshots/) held in one repo's cache folder."""
    refs = sorted(p.relative_to(storage / "refs").as_posix() for p in (storage / "refs").rglob("*") if p.is_file())
    snaps = sorted(p.name for p in (storage / "snapshots").glob("*") if p.is_dir())
    return refs + snaps


def download_checkpoint(repo_id: str, files: tuple[str, ...], revision: str | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False,
                        token: str | bool | None = None) -> Path:
    """The snapshot folder of `repo_id` at `revision` (default: main) holding `files`, downloaded into
    (or found in) the huggingface_hub cache. Offline (local_files_only, or HF_HUB_OFFLINE=1) only the
    cache is read."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import (GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                       LocalTokenNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
                                       validate_repo_id)

    try:   # a cache known (from its tree listing) to miss files: recent huggingface_hub versions only
        from huggingface_hub.errors import IncompleteSnapshotError
    except ImportError:
        IncompleteSnapshotError = ()

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f"{repo_id}: no local directory of that name, and not a valid Hugging Face Hub repo id "
                       f"({str(e).splitlines()[0]})") from None
    rev = revision or "main"
    # passed on explicitly: huggingface_hub 0.24 binds its default when first imported, so a cache set
    # later (its HF_HUB_CACHE constant) would not be the one searched, nor the one named in errors
    cache = Path(cache_dir or constants.HF_HUB_CACHE).expanduser()
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    name = f"{repo_id} (revision {rev!r})"
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, token=token,
                                        local_files_only=local_files_only, allow_patterns=list(files)))
    except HFValidationError as e:   # e.g. a revision it refuses
        raise HubError(f"{name}: {str(e).splitlines()[0]}") from None
    except RevisionNotFoundError:
        raise HubError(f"{name}: no such revision (branch, tag or commit) in the Hub repository") from None
    except GatedRepoError:
        raise HubError(f"{repo_id}: a gated repository; accept its conditions on huggingface.co and pass "
                       "a token (token=..., or `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise HubError(f"{repo_id}: no such repository on the Hugging Face Hub, or a private one this token "
                       "cannot see (pass token=..., or `hf auth login`); no local directory of that name "
                       "either") from None
    except IncompleteSnapshotError:
        raise HubError(f"{name}: the cached snapshot in {storage} is incomplete and the Hub cannot be reached "
                       f"to complete it; download it again online") from None
    except LocalEntryNotFoundError as e:
        cached = _cached_revisions(storage) if storage.is_dir() else []
        if _offline(local_files_only):
            why = ("local_files_only=True" if local_files_only else "HF_HUB_OFFLINE=1") + ": only the cache is read"
        else:
            why = f"the Hub cannot be reached ({type(e.__cause__ or e).__name__})"
        if cached:
            raise HubError(f"{name}: this revision is not in the Hugging Face cache ({storage}; it holds "
                           f"{', '.join(cached)}) and {why}; no local directory of that name either") from None
        raise HubError(f"{repo_id}: not in the Hugging Face cache ({cache}) and {why}; download it once "
                       f"online (or pass cache_dir=); no local directory of that name either") from None
    except LocalTokenNotFoundError:
        raise HubError(f"{repo_id}: token=True, but no Hugging Face token is saved (`hf auth login`)") from None
    except HfHubHTTPError as e:
        raise HubError(f"{repo_id}: the Hugging Face Hub refused the download ({str(e).splitlines()[0]})") from None
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise HubError(f"{name}, commit {folder.name}: the repository has no {' or '.join(missing)}; a vqkit "
                       f"checkpoint repository holds {' + '.join(files)}")
    return folder


# ---- model cards ----------------------------------------------------------------------------------

def table(rows: list[tuple[str, object]], header: tuple[str, str] = ("", "")) -> str:
    """A two-column Markdown table; rows whose value is None are left out."""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows if v is not None]
    return "\n".join(lines)


def _folder_text(f: dict, said: dict | None = None) -> str:
    """One folder of a training_data.json entry; `said`: a licence already quoted (not repeated)."""
    text = f"{f.get('files', '?')} files in `{f.get('root', '?')}`"
    text += f" ({f['summary']})" if f.get("summary") else ""
    text += f", file list sha256 {f.get('file_list_sha256', '?')}"
    text += f": {f['split']}" if f.get("split") else ""
    licence = f.get("licence")
    if licence == said:
        text += ", under the same licence" if licence else ""
    elif isinstance(licence, dict):
        text += (f". Its corpus manifest states the source and licence: {licence.get('source')}, "
                 f"{licence.get('licence')}")
    return text + "."


def training_data_text(entries: list[dict] | None, given: str | None, missing: str) -> str:
    """A card's "Training data" section: `given` (the uploader's own words) and what the run recorded
    in training_data.json (io/run_records.py), one paragraph per entry (a resume on other files adds
    one); `missing` when neither says anything."""
    parts = [given] if given else []
    for e in entries or []:
        if not isinstance(e.get("train"), dict):
            continue
        lead = f"From step {e.get('from_step', 0)}, trained" if len(entries) > 1 else "Trained"
        text = f"{lead} on {_folder_text(e['train'])}"
        if isinstance(e.get("heldout"), dict):
            text += f" Held out while training: {_folder_text(e['heldout'], e['train'].get('licence'))}"
        if e.get("tokenizer"):
            text += f" Tokens of the tokenizer at `{e['tokenizer']}`."
        parts.append(text)
    return "\n\n".join(parts) or missing


def render_card(title: str, intro: str, sections: list[tuple[str, str]], license: str | None,
                tags: list[str]) -> str:
    """A model card: YAML front matter (library_name vqkit, license (`other` when not stated), tags
    after "vqkit"), `# title`, an intro line, then one `## heading` per (heading, Markdown body) and
    the licence; sections with an empty body are left out."""
    meta = {"library_name": "vqkit", "license": license or "other", "tags": ["vqkit", *tags]}
    sections = [*sections, ("Licence", f"Weights: {license}." if license else
                            "The uploader has not stated a licence for these weights (license: other).")]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    body = "".join(f"\n## {head}\n\n{text.strip()}\n" for head, text in sections if text and text.strip())
    return f"---\n{front}---\n\n# {title}\n\n{intro.strip()}\n{body}"


# ---- upload -----------------------------------------------------------------------------------------

def stage(directory: str | Path, write_files: Callable[[Path], object], card: str) -> Path:
    """Write what an upload sends into `directory`: the checkpoint files (`write_files(directory)`,
    e.g. a model's save_pretrained) and the model card as README.md."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    write_files(d)
    atomic_write(d / CARD_NAME, card)
    return d


def upload(folder: str | Path, repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
           revision: str | None = None, commit_message: str | None = None, api=None):
    """Create `repo_id` if needed (exist_ok; `private` applies to a new repo) and upload `folder` as one
    commit to `revision` (a branch, created from main if new; default main). -> huggingface_hub's
    CommitInfo. `api`: an HfApi (default: a new one)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError, LocalTokenNotFoundError

    api = api if api is not None else HfApi()
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
        message = commit_message or f"Upload {Path(folder).name or 'checkpoint'} with vqkit"
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), token=token, revision=revision,
                                 commit_message=message)
    except LocalTokenNotFoundError:
        raise HubError(f"{repo_id}: uploading needs a Hugging Face token (token=..., or `hf auth login`)") from None
    except HfHubHTTPError as e:
        raise HubError(f"{repo_id}: upload failed ({str(e).splitlines()[0]})") from None


def push(write_files: Callable[[Path], object], card: str, repo_id: str, **upload_options):
    """Stage the files and card in a temporary folder, upload it (see `upload`), remove it."""
    with tempfile.TemporaryDirectory(prefix="vqkit-hub-") as tmp:
        folder = stage(Path(tmp) / repo_id.split("/")[-1], write_files, card)
        return upload(folder, repo_id, **upload_options)

"""The Hugging Face Hub, offline: checkpoints load from a huggingface_hub cache laid out the way the
library lays it out (blobs/, refs/, snapshots/<commit>/ links), by branch and by commit; misses say
which repo and what is missing; push_to_hub stages config + weights + a model card and hands that
folder to huggingface_hub's HfApi (replaced here by a recorder: the library, not vqkit)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import save_tiny_tokenizer
from vqkit.cli import main
from vqkit.config import from_dict
from vqkit.config.prior_schema import PriorConfig
from vqkit.io.hub import HubError, is_repo_id
from vqkit.io.run_records import file_list_hash
from vqkit.models.hub_card import stage_tokenizer, tokenizer_card
from vqkit.models.tokenizer import Tokenizer
from vqkit.priors.hub_card import stage_prior
from vqkit.priors.prior import TokenPrior

pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py

COMMIT_A = "a" * 8 + "0123456789abcdef0123456789abcdef"   # 40 hex digits, as the Hub's commit ids
COMMIT_B = "b" * 8 + "0123456789abcdef0123456789abcdef"


def etag(name: str, data: bytes) -> str:
    """The blob name huggingface_hub gives a file: the sha256 of LFS files (weights), the git blob
    sha1 of the others."""
    if name.endswith(".safetensors"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def cache_repo(cache: Path, repo_id: str, checkpoint: Path, commit: str, refs=("main",), skip=()) -> Path:
    """Put the files of `checkpoint` into `cache` as huggingface_hub stores a download of `repo_id` at
    `commit`: models--ns--name/blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>, and
    refs/<branch> holding the commit hash (no newline)."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir(exist_ok=True)
    for f in sorted(checkpoint.iterdir()):
        if f.name in skip:
            continue
        data = f.read_bytes()
        blob = storage / "blobs" / etag(f.name, data)
        blob.write_bytes(data)
        (snapshot / f.name).symlink_to(f"../../blobs/{blob.name}")
    for ref in refs:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE=<tmp>/hf-cache. huggingface_hub reads both into its constants
    when imported, so the constants are set too."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny mel tokenizers with different weights, saved by save_pretrained."""
    root = tmp_path_factory.mktemp("ckpts")
    return save_tiny_tokenizer(root / "one", seed=0), save_tiny_tokenizer(root / "two", seed=1)


def mel(frames: int = 48) -> torch.Tensor:
    return -5.0 + 2.0 * torch.randn(80, frames, generator=torch.Generator().manual_seed(0))


def test_a_cached_repo_loads_offline_by_branch_and_by_commit(offline, checkpoints):
    one, two = (Tokenizer.from_pretrained(c) for c in checkpoints)
    assert one.tokenizer_id != two.tokenizer_id
    cache_repo(offline, "org/name", checkpoints[0], COMMIT_A, refs=("main",))
    cache_repo(offline, "org/name", checkpoints[1], COMMIT_B, refs=("v2",))
    x = mel()
    for revision, original, commit in [(None, one, COMMIT_A), ("main", one, COMMIT_A), ("v2", two, COMMIT_B),
                                       (COMMIT_A, one, COMMIT_A), (COMMIT_B, two, COMMIT_B)]:
        tok = Tokenizer.from_pretrained("org/name", revision=revision)
        assert tok.tokenizer_id == original.tokenizer_id
        assert torch.equal(tok.encode(x), original.encode(x))
        assert tok._loaded_from == offline / "models--org--name" / "snapshots" / commit


def test_cache_dir_and_local_files_only_are_passed_through(tmp_path, checkpoints, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "elsewhere"))   # not where the repo is
    cache_repo(tmp_path / "mine", "org/name", checkpoints[0], COMMIT_A)
    tok = Tokenizer.from_pretrained("org/name", cache_dir=tmp_path / "mine", local_files_only=True)
    assert tok.tokenizer_id == Tokenizer.from_pretrained(checkpoints[0]).tokenizer_id
    with pytest.raises(HubError, match=r"org/name: not in the Hugging Face cache .*local_files_only=True"):
        Tokenizer.from_pretrained("org/name", local_files_only=True)


def test_an_existing_local_path_wins_over_a_repo_id(offline, checkpoints, tmp_path, monkeypatch):
    cache_repo(offline, "org/name", checkpoints[1], COMMIT_A)
    monkeypatch.chdir(tmp_path)
    save_tiny_tokenizer(tmp_path / "org" / "name", seed=0)   # a local folder spelled like the repo
    assert not is_repo_id("org/name") and is_repo_id("org/other")
    assert Tokenizer.from_pretrained("org/name").tokenizer_id == Tokenizer.from_pretrained(checkpoints[0]).tokenizer_id
    with pytest.raises(ValueError, match=r"org/name: revision='v2' applies to Hugging Face Hub repos"):
        Tokenizer.from_pretrained("org/name", revision="v2")
    with pytest.raises(FileNotFoundError, match="nowhere/at/all: no such checkpoint or run directory"):
        Tokenizer.from_pretrained("nowhere/at/all")   # not namespace/name: the local-path error
    with pytest.raises(HubError, match=r"^runs--x/y: no local directory of that name, and not a valid Hugging Face "
                                       r"Hub repo id \(Cannot have -- or \.\. in repo_id"):
        Tokenizer.from_pretrained("runs--x/y")


def test_misses_name_the_repo_and_the_problem(offline, checkpoints):
    with pytest.raises(HubError) as e:
        Tokenizer.from_pretrained("org/absent")
    assert str(e.value).startswith("org/absent: not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE=1" in str(e.value) and str(offline) in str(e.value)

    cache_repo(offline, "org/name", checkpoints[0], COMMIT_A)
    with pytest.raises(HubError, match=r"org/name \(revision 'v9'\): this revision is not in the Hugging Face "
                                       rf"cache .*it holds main, {COMMIT_A}\) and HF_HUB_OFFLINE=1"):
        Tokenizer.from_pretrained("org/name", revision="v9")

    cache_repo(offline, "org/noweights", checkpoints[0], COMMIT_A, skip=("model.safetensors",))
    with pytest.raises(HubError, match=rf"org/noweights \(revision 'main'\), commit {COMMIT_A}: the repository "
                                       r"has no model.safetensors; a vqkit checkpoint repository holds "
                                       r"config.yaml \+ model.safetensors"):
        Tokenizer.from_pretrained("org/noweights")


def hub_answers(monkeypatch, error: type):
    """The Hub (huggingface_hub's HfApi.repo_info, the call snapshot_download makes first) answering
    with `error`, as it does for an unknown revision or repo; no network is used."""
    import httpx2   # huggingface_hub's HTTP client, whose responses its errors carry
    from huggingface_hub import HfApi, constants

    def repo_info(self, repo_id, **kw):
        request = httpx2.Request("GET", f"https://huggingface.co/api/models/{repo_id}")
        raise error(f"404 Client Error for {repo_id}", response=httpx2.Response(404, request=request))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "repo_info", repo_info)


def test_online_answers_name_the_repo_and_the_revision(monkeypatch, tmp_path):
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    hub_answers(monkeypatch, RevisionNotFoundError)
    with pytest.raises(HubError, match=r"^org/name \(revision 'v7'\): no such revision \(branch, tag or commit\) "
                                       r"in the Hub repository$"):
        Tokenizer.from_pretrained("org/name", revision="v7", cache_dir=tmp_path)
    hub_answers(monkeypatch, RepositoryNotFoundError)
    with pytest.raises(HubError, match=r"^org/nope: no such repository on the Hugging Face Hub, or a private one"):
        Tokenizer.from_pretrained("org/nope", cache_dir=tmp_path)


def test_the_cli_takes_a_repo_id(offline, checkpoints, capsys, tmp_path):
    cache_repo(offline, "org/name", checkpoints[0], COMMIT_A)
    assert main(["info", "org/name"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tokenizer_id"] == Tokenizer.from_pretrained(checkpoints[0]).tokenizer_id
    assert info["checkpoint"] == str(offline / "models--org--name" / "snapshots" / COMMIT_A)
    assert main(["info", "org/absent"]) == 2
    assert "vqkit info: error: org/absent: not in the Hugging Face cache" in capsys.readouterr().err
    assert main(["eval", "org/name", "--data", str(tmp_path)]) == 2   # CKPT/report would be a folder ./org/name
    assert "org/name is a Hugging Face Hub repo: pass --out" in capsys.readouterr().err


def tiny_prior(seed: int = 0) -> TokenPrior:
    torch.manual_seed(seed)
    cfg = from_dict(PriorConfig, {"model": {"kind": "gpt", "dim": 32, "depth": 1, "heads": 2}}).validate()
    meta = {"tokenizer_id": "0123456789abcdef", "tokenizer_path": None, "modality": "mel", "codebook_size": 16,
            "channels": 1, "grid": [6], "class_names": []}
    return TokenPrior(cfg, meta).eval()


def test_a_prior_loads_from_the_cache_and_a_tokenizer_repo_is_not_one(offline, tmp_path, checkpoints):
    prior = tiny_prior()
    cache_repo(offline, "org/prior", prior.save_pretrained(tmp_path / "prior"), COMMIT_A)
    loaded = TokenPrior.from_pretrained("org/prior")
    tokens = torch.randint(0, 16, (2, 6, 1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.net(tokens), prior.net(tokens))
    assert loaded.meta == prior.meta
    cache_repo(offline, "org/name", checkpoints[0], COMMIT_A)
    with pytest.raises(HubError, match=r"org/name \(revision 'main'\), commit a+0123.*: the repository has no "
                                       r"prior.json; a vqkit checkpoint repository holds config.yaml \+ "
                                       r"model.safetensors \+ prior.json"):
        TokenPrior.from_pretrained("org/name")


def test_sample_takes_a_prior_and_its_tokenizer_from_the_hub(offline, tmp_path, checkpoints, capsys):
    tok = Tokenizer.from_pretrained(checkpoints[0])
    prior = tiny_prior()
    prior = TokenPrior(prior.cfg, {**prior.meta, "tokenizer_id": tok.tokenizer_id, "tokenizer_path": "/gone/tok",
                                   "codebook_size": tok.codebook_size})
    cache_repo(offline, "org/prior", prior.save_pretrained(tmp_path / "prior"), COMMIT_A)
    cache_repo(offline, "org/name", checkpoints[0], COMMIT_A)
    assert main(["sample", "org/prior", "-n", "1", "-o", str(tmp_path / "s"), "--vocoder", "griffin-lim"]) == 2
    assert "its tokenizer '/gone/tok' is not there; pass --tokenizer CKPT" in capsys.readouterr().err
    assert main(["sample", "org/prior", "--tokenizer", "org/name", "-n", "1", "-o", str(tmp_path / "s"),
                 "--vocoder", "griffin-lim"]) == 0
    assert np.load(tmp_path / "s" / "sample_000.npy").shape == (6,)


# ---- model cards and uploads ------------------------------------------------------------------------

def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_staged_folder_loads_and_its_card_says_what_the_model_is(tmp_path, checkpoints):
    tok = Tokenizer.from_pretrained(checkpoints[0])
    folder = stage_tokenizer(tok, tmp_path / "staged", "org/name", license="apache-2.0",
                             data="LibriTTS train-clean-100 (CC-BY-4.0)")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.yaml", "model.safetensors"]
    assert Tokenizer.from_pretrained(folder).tokenizer_id == tok.tokenizer_id
    card = (folder / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "vqkit" and meta["license"] == "apache-2.0"
    assert meta["tags"][:2] == ["vqkit", "tokenizer"] and "mel-spectrogram" in meta["tags"] and "fsq" in meta["tags"]
    n = sum(p.numel() for p in tok.parameters())
    for fact in ("# org/name", "| quantiser | fsq levels [8, 5, 5, 5] = 1000 codes |",
                 f"| codebook size | 1000 ({tok.bits_per_token:.4g} bits per token, 1 per position) |",
                 f"{tok.tokens_per_second:.4g} tokens/s = {tok.bits_per_second:.4g} bits/s",
                 f"| parameters | {n:,} (", f"`{tok.tokenizer_id}`", "LibriTTS train-clean-100 (CC-BY-4.0)",
                 'Tokenizer.from_pretrained("org/name")', "`vqkit encode org/name INPUT -o OUT`"):
        assert fact in card
    assert "Held-out metrics" not in card   # no eval report beside this checkpoint
    unlicensed = front_matter(tokenizer_card(tok, "org/name"))
    assert unlicensed["license"] == "other"


IMAGE_RUN = ["--preset", "movq", "--no-progress", "model.backbone.channels=[16,32]",
             "model.backbone.spatial_norm_blocks=2", "discriminator.patch_channels=[16,16]", "data.image_size=32",
             "train.batch_size=2", "train.steps=4", "train.save_every=2", "train.eval_every=4", "loss.gan_start_step=2"]


def test_the_card_quotes_the_runs_eval_report_and_the_corpus_licence(tmp_path, capsys):
    """A real (tiny) training run and `vqkit eval` of it: the card of its latest checkpoint quotes the
    report and the licences the corpus manifest states; the card of an earlier checkpoint does not
    quote a report of other weights."""
    corpus = tmp_path / "images"
    g = np.random.default_rng(0)
    for split, n in (("train", 3), ("heldout", 2)):
        (corpus / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(g.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(corpus / split / f"p{i}.png")
    (corpus / "manifest.json").write_text(json.dumps(   # what the demo image set records per photograph
        {"source": "scikit-image 0.25", "images": {"heldout/p0.png": {"licence": "CC0"},
                                                   "heldout/p1.png": {"licence": "public domain"}}}))
    run = tmp_path / "run"
    assert main(["train", "--data", str(corpus / "train"), "--valid-data", str(corpus / "heldout"),
                 "--out", str(run), *IMAGE_RUN]) == 0
    assert main(["eval", str(run), "--data", str(corpus / "heldout"), "--crop", "0", "--no-progress"]) == 0
    record = json.loads((run / "report" / "metrics.json").read_text())
    tok = Tokenizer.from_pretrained(run)
    card = tokenizer_card(tok, "org/img", source=tok._loaded_from)
    assert tok._loaded_from == run / "checkpoints" / "step_00000004"
    assert "image" in front_matter(card)["tags"] and "vq" in front_matter(card)["tags"]
    assert f"token grid {list(tok.token_grid(256, 256))}" in card and "| trained steps | 4 |" in card
    assert f"`vqkit eval` on 2 held-out files ({corpus / 'heldout'}, file list sha256 " in card
    assert f"| draft_psnr | {record['metrics']['draft_psnr']:.4g} |" in card
    assert f"| bits_per_image | {int(record['metrics']['bits_per_image'])} |" in card
    assert f"({corpus}/manifest.json) states its source and licence: scikit-image 0.25, CC0; public domain." in card
    assert tokenizer_card(tok, "org/img", source=run) == card   # the run folder: its latest checkpoint
    train_list = file_list_hash(["p0.png", "p1.png", "p2.png"])
    assert (f"Trained on 3 files in `{(corpus / 'train').resolve()}` (3 images, 0.0 megapixels), file list sha256 "
            f"{train_list}. Its corpus manifest states the source and licence: scikit-image 0.25, CC0; public domain. "
            f"Held out while training: 2 files in `{(corpus / 'heldout').resolve()}`") in card
    earlier = run / "checkpoints" / "step_00000002"
    card2 = tokenizer_card(Tokenizer.from_pretrained(earlier), "org/img", source=earlier)
    assert "| trained steps | 2 |" in card2 and "Held-out metrics" not in card2


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records the calls and what the folder holds at upload."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def create_branch(self, repo_id, **kw):
        self.calls.append(("create_branch", repo_id, kw))

    def upload_folder(self, **kw):
        folder = Path(kw["folder_path"])
        self.files = {p.name: p.read_bytes() for p in folder.iterdir()}
        self.calls.append(("upload_folder", kw["repo_id"], kw))
        return "https://huggingface.co/org/name/commit/" + COMMIT_A


def test_push_to_hub_uploads_the_staged_folder_with_the_options(tmp_path, checkpoints):
    tok = Tokenizer.from_pretrained(checkpoints[0])
    api = RecordingApi()
    out = tok.push_to_hub("org/name", license="mit", token="hf_x", private=True, revision="v2",
                          commit_message="first", api=api)
    assert out.endswith(COMMIT_A)
    (create, repo, kw), (branch, _, bkw), (upload, _, ukw) = api.calls
    assert (create, repo, kw) == ("create_repo", "org/name", {"token": "hf_x", "private": True, "exist_ok": True})
    assert branch == "create_branch" and bkw == {"branch": "v2", "token": "hf_x", "exist_ok": True}
    assert upload == "upload_folder" and ukw["revision"] == "v2" and ukw["commit_message"] == "first"
    assert ukw["token"] == "hf_x" and not Path(ukw["folder_path"]).exists()   # the staging folder is gone
    assert sorted(api.files) == ["README.md", "config.yaml", "model.safetensors"]
    assert api.files["model.safetensors"] == (checkpoints[0] / "model.safetensors").read_bytes()
    assert front_matter(api.files["README.md"].decode())["license"] == "mit"


def test_push_to_hub_uses_huggingface_hubs_hfapi_and_words_its_errors(monkeypatch, checkpoints):
    import httpx2   # huggingface_hub's HTTP client, whose responses its errors carry
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    seen = {}
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: seen.update(repo=repo_id))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kw: seen.update(files=sorted(p.name for p in Path(kw["folder_path"]).iterdir()),
                                                       message=kw["commit_message"], revision=kw["revision"]))
    tok = Tokenizer.from_pretrained(checkpoints[0])
    tok.push_to_hub("org/name")
    assert seen == {"repo": "org/name", "files": ["README.md", "config.yaml", "model.safetensors"],
                    "message": "Upload name with vqkit", "revision": None}

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: seen.update(repo=repo_id, private=kw["private"], token=kw["token"]))
    assert main(["push-to-hub", str(checkpoints[0]), "org/cli", "--private", "--token", "hf_y", "--message", "m"]) == 0
    assert seen["repo"] == "org/cli" and seen["private"] is True and seen["token"] == "hf_y" and seen["message"] == "m"

    def refuse(self, repo_id, **kw):
        request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
        raise HfHubHTTPError("403 Forbidden: you cannot write to org/name",
                             response=httpx2.Response(403, request=request))
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    with pytest.raises(HubError, match=r"org/name: upload failed \(403 Forbidden: you cannot write to org/name\)"):
        tok.push_to_hub("org/name")


def test_the_cli_stages_a_tokenizer_and_a_prior(tmp_path, checkpoints, capsys):
    assert main(["push-to-hub", str(checkpoints[0]), "org/name", "--license", "apache-2.0",
                 "--stage", str(tmp_path / "tok")]) == 0
    assert "staged tokenizer for org/name in" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["README.md", "config.yaml", "model.safetensors"]
    assert main(["push-to-hub", str(checkpoints[0]), "org/name", "--stage", str(tmp_path / "tok")]) == 2
    assert "not an empty folder" in capsys.readouterr().err

    prior = tiny_prior()
    prior.save_pretrained(tmp_path / "prior")
    assert main(["push-to-hub", str(tmp_path / "prior"), "org/prior", "--tokenizer", "org/name",
                 "--stage", str(tmp_path / "p")]) == 0
    files = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert files == ["README.md", "config.yaml", "model.safetensors", "prior.json"]
    card = (tmp_path / "p" / "README.md").read_text()
    assert front_matter(card)["tags"][:3] == ["vqkit", "token-prior", "gpt"]
    assert "tokenizer `0123456789abcdef` (org/name)" in card and "| codebook size | 16 |" in card
    assert 'Tokenizer.from_pretrained("org/name")' in card
    staged = stage_prior(prior, tmp_path / "p2", "org/prior")
    assert TokenPrior.from_pretrained(staged).meta == prior.meta

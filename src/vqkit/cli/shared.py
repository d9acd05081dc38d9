"""What more than one verb uses: the log, tokenizer loading, corpus loading, a run's config and
output folder, and the options those verbs share."""
from __future__ import annotations

import os
from pathlib import Path

from ..config import Config, load_config


def log(msg: str) -> None:
    # under torchrun / accelerate launch every process runs this code; one of them speaks
    if os.environ.get("RANK", "0") == "0":
        print(msg, flush=True)


def load_tokenizer(path):
    from ..models.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(path)


def add_max_pixels(p) -> None:
    from ..frontends.image import MAX_PIXELS

    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help=f"images: refuse larger ones before decoding them (default {MAX_PIXELS:,})")


def add_run_options(p) -> None:
    """The options of a training run, after the verb's own data options (train, train-prior)."""
    p.add_argument("--config", default=None, help="YAML file merged over the preset")
    p.add_argument("--out", required=True, help="run directory (checkpoints, logs, samples)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="auto|CKPT",
                   help="continue the run: `auto` (the default) = its newest complete checkpoint, or a fresh "
                        "start when there is none (the same command restarts a preempted job); or a checkpoint dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.steps=2000")


def _pick(items, indices: list[int]):
    return items.subset(indices) if hasattr(items, "subset") else [items[i] for i in indices]


def load_train_and_valid(cfg, data: str, valid_data: str | None):
    """(training items, held-out items, what the run records of them: io/run_records.folder_record
    of each): --valid-data's, else a file-name hash split of data."""
    from ..data.audio_corpus import split_by_hash
    from ..io.run_records import folder_record, hash_split_notes
    from ..modalities import modality_of

    modality = modality_of(cfg)
    corpus, train = modality.load_corpus(cfg, data, log)
    names, summary, notes, heldout = corpus.relative_paths(), corpus.summary(), (None, None), None
    if valid_data:
        held_corpus, valid = modality.load_corpus(cfg, valid_data, log)
        heldout = folder_record(valid_data, held_corpus.relative_paths(), held_corpus.skipped, held_corpus.summary())
    elif cfg.data.valid_fraction > 0 and len(train) >= 2:
        tr, va = split_by_hash(names, cfg.data.valid_fraction)
        train, valid = _pick(train, tr), _pick(train, va)
        notes = hash_split_notes(cfg.data.valid_fraction)
        heldout = folder_record(data, [names[i] for i in va], split=notes[1])
        names, summary = [names[i] for i in tr], f"the folder: {summary}"
        log(f"held out {len(valid)} of {len(train) + len(valid)} files by file-name hash (data.valid_fraction)")
    else:
        valid = []
    record = {"train": folder_record(data, names, corpus.skipped, summary, notes[0]), "heldout": heldout}
    return train, modality.heldout_items(cfg, valid), record


def run_config(args, default_preset: str, schema: type = Config):
    """The config of `vqkit train` / `train-prior --out RUN`: a resumed run keeps its own config.yaml
    (overrides on top); a new run is preset <- --config <- overrides, and may not overwrite a run."""
    run = Path(args.out)
    if args.resume and (run / "config.yaml").exists():
        log(f"resuming with the run's own config ({run / 'config.yaml'})")
        return load_config(path=run / "config.yaml", overrides=args.overrides, schema=schema, saved=True)
    if not args.resume and (run / "checkpoints" / "latest").exists():
        raise RuntimeError(f"{run} already holds a training run; pass --resume to continue it, "
                           "or choose another --out")
    return load_config(preset=args.preset or default_preset, path=args.config, overrides=args.overrides,
                       schema=schema)


def check_run_folder(args, inputs: list[tuple[str, str | None]]) -> None:
    """Before a run loads anything: --out must be a writable folder apart from its inputs (its
    samples and checkpoints would otherwise be read back as training data on --resume)."""
    from ..io.paths import check_output_folder, refuse_overlap

    check_output_folder(Path(args.out), "--out")
    refuse_overlap(Path(args.out), "--out", [(flag, Path(p) if p else None) for flag, p in inputs])


def refuse_output_overlap(output: str, tokens: str, flag: str) -> None:
    """-o apart from the token folder it reads (visualize-prior, pack-tokens): io.paths.refuse_overlap."""
    from ..io.paths import refuse_overlap

    refuse_overlap(Path(output), "-o", [(flag, Path(tokens))])


def token_corpus(folder: str, tokenizer_id: str, class_folders: bool):
    from ..priors.token_data import TokenCorpus

    return TokenCorpus.from_folder(folder, tokenizer_id=tokenizer_id, class_folders=class_folders, log=log)


def add_prior_options(p) -> None:
    """What sample and visualize-prior both take: the prior, the output folder, and how to decode."""
    p.add_argument("prior", help="prior checkpoint or run directory")
    p.add_argument("-o", "--output", required=True, help="output folder (index.html and files)")
    p.add_argument("--tokenizer", default=None, help="tokenizer checkpoint (default: the one the prior recorded)")
    p.add_argument("--vocoder", choices=["auto", "hifigan", "griffin-lim"], default="auto")


def prior_and_tokenizer(args):
    """(prior, its tokenizer, the modality's example writer) for sample and visualize-prior."""
    from ..io.hub import is_repo_id
    from ..priors.prior import TokenPrior

    prior = TokenPrior.from_pretrained(args.prior)
    path = args.tokenizer or prior.meta.get("tokenizer_path")
    if not path or not (Path(path).exists() or (args.tokenizer and is_repo_id(path))):   # --tokenizer: also a hub repo
        raise FileNotFoundError(f"{args.prior}: its tokenizer {path!r} is not there; pass --tokenizer CKPT")
    tok = load_tokenizer(path)
    if tok.tokenizer_id != prior.meta["tokenizer_id"]:
        raise ValueError(f"{path}: tokenizer {tok.tokenizer_id} is not the one this prior models "
                         f"({prior.meta['tokenizer_id']}); pass the checkpoint that encoded its tokens")
    from ..modalities import modality_of

    return prior, tok, modality_of(tok).example_writer(tok, args.vocoder)

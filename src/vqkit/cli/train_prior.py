"""`vqkit train-prior --tokenizer CKPT --tokens DIR --out RUN`: train a token prior (GPT or MaskGIT)."""
from __future__ import annotations

from pathlib import Path

from .shared import add_run_options, check_run_folder, load_tokenizer, log, run_config, token_corpus


def add_parser(sub) -> None:
    p = sub.add_parser("train-prior", help="train a token prior (GPT or MaskGIT) on `vqkit encode` output")
    p.add_argument("--preset", default=None, help="prior-gpt (default) or prior-maskgit")
    p.add_argument("--tokenizer", required=True, help="the tokenizer checkpoint that made the tokens")
    p.add_argument("--tokens", required=True, help="folder of token files from `vqkit encode`")
    p.add_argument("--valid-tokens", default=None, help="held-out token folder (default: a hash split)")
    add_run_options(p)


def run(args) -> int:
    from ..config.prior_schema import PriorConfig
    from ..data.audio_corpus import split_by_hash
    from ..io.run_records import folder_record, hash_split_notes
    from ..training.prior_trainer import PriorTrainer

    run = Path(args.out)
    check_run_folder(args, [("--tokens", args.tokens), ("--valid-tokens", args.valid_tokens)])
    cfg = run_config(args, "prior-gpt", schema=PriorConfig)
    if args.resume:
        cfg = _resumed_width(cfg, run, args.resume)
    tok = load_tokenizer(args.tokenizer)
    corpus = token_corpus(args.tokens, tok.tokenizer_id, cfg.data.class_folders)
    if cfg.data.class_folders and cfg.model.num_classes == 0:
        cfg.model.num_classes = len(corpus.class_names)   # the folders define the classes
    tokenizer_path = str(Path(args.tokenizer).resolve())
    valid, notes = None, (None, None)
    if args.valid_tokens:
        valid = token_corpus(args.valid_tokens, tok.tokenizer_id, cfg.data.class_folders)
    elif cfg.data.valid_fraction > 0 and len(corpus) >= 2:
        train_idx, valid_idx = split_by_hash(corpus.paths, cfg.data.valid_fraction)
        corpus, valid = corpus.subset(train_idx), corpus.subset(valid_idx)
        notes = hash_split_notes(cfg.data.valid_fraction, "token files")
        log(f"held out {len(valid)} of {len(corpus) + len(valid)} token files by file-name hash (data.valid_fraction)")
    data = {"train": folder_record(args.tokens, corpus.paths, corpus.skipped, corpus.summary(), notes[0]),
            "heldout": None if valid is None else folder_record(valid.root, valid.paths, valid.skipped, valid.summary(),
                                                                notes[1]),
            "tokenizer": tokenizer_path}
    trainer = PriorTrainer(cfg, run, corpus, valid, tokenizer_path=tokenizer_path, log=log,
                           progress=not args.no_progress)
    n_params = sum(p.numel() for p in trainer.raw_model.parameters())
    log(f"training {cfg.name} ({cfg.model.kind}): {n_params / 1e6:.2f}M parameters, {cfg.train.steps} steps, "
        f"batch {cfg.train.batch_size} x {'x'.join(map(str, cfg.data.crop))} positions x {corpus.channels}, "
        f"codebook {corpus.codebook_size}, device {trainer.acc.device}")
    trainer.fit(resume=args.resume or False, data=data)
    log(f"done: checkpoint {run / 'checkpoints'}, logs {run / 'metrics.jsonl'}")
    return 0


def _resumed_width(cfg, run: Path, resume: bool | str):
    """A resumed run keeps the MLP width its checkpoint was saved with (see keep_saved_width)."""
    from ..io.weights import WEIGHTS_NAME
    from ..priors.prior import keep_saved_width
    from ..training.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run) if resume in (True, "auto") else Path(resume)
    if ckpt is None or not (ckpt / WEIGHTS_NAME).is_file():
        return cfg   # nothing to resume from (a fresh start), or the loop names what is wrong
    return keep_saved_width(cfg, ckpt / WEIGHTS_NAME)

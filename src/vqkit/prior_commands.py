"""What the token-prior verbs do: `train-prior`, `sample`, `visualize-prior` (parsing in cli.py)."""
from __future__ import annotations

from pathlib import Path

from .cli.shared import check_run_folder, log, run_config


def _refuse_overlap(output: str, tokens: str, flag: str) -> None:
    from .io.paths import refuse_overlap

    refuse_overlap(Path(output), "-o", [(flag, Path(tokens))])


def _tokenizer(path: str):
    from .models.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(path)


def _corpus(folder: str, tokenizer_id: str, class_folders: bool):
    from .priors.token_data import TokenCorpus

    return TokenCorpus.from_folder(folder, tokenizer_id=tokenizer_id, class_folders=class_folders, log=log)


def cmd_train_prior(args) -> int:
    from .config.prior_schema import PriorConfig
    from .data.audio_corpus import split_by_hash
    from .training.prior_trainer import PriorTrainer

    run = Path(args.out)
    check_run_folder(args, [("--tokens", args.tokens), ("--valid-tokens", args.valid_tokens)])
    cfg = run_config(args, "prior-gpt", schema=PriorConfig)
    tok = _tokenizer(args.tokenizer)
    corpus = _corpus(args.tokens, tok.tokenizer_id, cfg.data.class_folders)
    if cfg.data.class_folders and cfg.model.num_classes == 0:
        cfg.model.num_classes = len(corpus.class_names)   # the folders define the classes
    valid = None
    if args.valid_tokens:
        valid = _corpus(args.valid_tokens, tok.tokenizer_id, cfg.data.class_folders)
    elif cfg.data.valid_fraction > 0 and len(corpus) >= 2:
        train_idx, valid_idx = split_by_hash(corpus.paths, cfg.data.valid_fraction)
        corpus, valid = corpus.subset(train_idx), corpus.subset(valid_idx)
        log(f"held out {len(valid)} of {len(corpus) + len(valid)} token files by file-name hash (data.valid_fraction)")
    trainer = PriorTrainer(cfg, run, corpus, valid, tokenizer_path=str(Path(args.tokenizer).resolve()), log=log,
                           progress=not args.no_progress)
    n_params = sum(p.numel() for p in trainer.raw_model.parameters())
    log(f"training {cfg.name} ({cfg.model.kind}): {n_params / 1e6:.2f}M parameters, {cfg.train.steps} steps, "
        f"batch {cfg.train.batch_size} x {'x'.join(map(str, cfg.data.crop))} positions x {corpus.channels}, "
        f"codebook {corpus.codebook_size}, device {trainer.acc.device}")
    trainer.fit(resume=args.resume or False)
    log(f"done: checkpoint {run / 'checkpoints'}, logs {run / 'metrics.jsonl'}")
    return 0


def _prior_and_tokenizer(args):
    from .priors.prior import TokenPrior

    prior = TokenPrior.from_pretrained(args.prior)
    path = args.tokenizer or prior.meta.get("tokenizer_path")
    if not path or not Path(path).exists():
        raise FileNotFoundError(f"{args.prior}: its tokenizer {path!r} is not there; pass --tokenizer CKPT")
    tok = _tokenizer(path)
    if tok.tokenizer_id != prior.meta["tokenizer_id"]:
        raise ValueError(f"{path}: tokenizer {tok.tokenizer_id} is not the one this prior models "
                         f"({prior.meta['tokenizer_id']}); pass the checkpoint that encoded its tokens")
    vocoder = None
    if tok.modality == "mel":
        from .vocoders import vocoder_for

        vocoder = vocoder_for(tok.config.model.mel, prefer=args.vocoder)
    return prior, tok, vocoder


def _labels(prior, label: str | None, n: int) -> list[int] | None:
    if label is None:
        # a class-conditional prior without --label: cycle through the classes
        return [i % len(prior.class_names) for i in range(n)] if prior.class_names else None
    if not prior.class_names:
        raise ValueError("--label: this prior is unconditional")
    if label in prior.class_names:
        return [prior.class_names.index(label)] * n
    if label.isdigit() and int(label) < len(prior.class_names):
        return [int(label)] * n
    raise ValueError(f"--label {label!r}: not one of the prior's classes ({', '.join(prior.class_names)})")


def cmd_sample(args) -> int:
    from .evaluation.prior_report import write_samples

    prior, tok, vocoder = _prior_and_tokenizer(args)
    write_samples(prior, tok, Path(args.output), args.n, batch_size=args.batch_size,
                  labels=_labels(prior, args.label, args.n), vocoder=vocoder, seed=args.seed, log=log,
                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, steps=args.steps)
    return 0


def cmd_visualize_prior(args) -> int:
    from .evaluation.prior_report import visualize_prior

    _refuse_overlap(args.output, args.tokens, "--tokens")
    prior, tok, vocoder = _prior_and_tokenizer(args)
    corpus = _corpus(args.tokens, tok.tokenizer_id, bool(prior.class_names))
    if prior.class_names:   # the corpus's folder indices -> the prior's class indices
        unknown = sorted(set(corpus.class_names) - set(prior.class_names))
        if unknown:
            raise ValueError(f"{args.tokens}: class folders {unknown[:3]} are not among the prior's classes")
        corpus.labels = [prior.class_names.index(corpus.class_names[i]) for i in corpus.labels]
    visualize_prior(prior, tok, corpus, Path(args.output), n_examples=args.examples, vocoder=vocoder, log=log)
    return 0


def cmd_pack_tokens(args) -> int:
    from .priors.token_data import pack_tokens

    _refuse_overlap(args.output, args.tokens, "the token folder")
    pack_tokens(args.tokens, args.output, shard_bytes=args.shard_mb * 2**20, log=log)
    return 0

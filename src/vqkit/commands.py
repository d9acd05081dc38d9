"""What each `vqkit` verb does (argument parsing lives in cli.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .config import available_presets, load_config


def log(msg: str) -> None:
    print(msg, flush=True)


def cmd_data(args) -> int:
    from .data.demo import make_demo_speech

    manifest = make_demo_speech(args.out, log=log, source=args.source)
    log(f"demo speech ready in {args.out}: {manifest['train_count']} train clips, "
        f"{manifest['heldout_count']} held-out clips (source: {manifest['source']}; see ATTRIBUTION.txt)")
    return 0


def _load_corpora(cfg, data: str, valid_data: str | None):
    from .data.audio_corpus import load_mel_corpus, split_by_hash
    from .frontends.mel import MelFrontend

    frontend = MelFrontend(cfg.model.mel)
    kw = dict(min_seconds=cfg.data.min_seconds, max_seconds=cfg.data.max_seconds, log=log)
    corpus = load_mel_corpus(data, frontend, **kw)
    train = [c.mel for c in corpus.clips]
    if valid_data:
        valid = [c.mel for c in load_mel_corpus(valid_data, frontend, **kw).clips]
    elif cfg.data.valid_fraction > 0 and len(train) >= 2:
        tr, va = split_by_hash(corpus.relative_paths(), cfg.data.valid_fraction)
        train, valid = [train[i] for i in tr], [train[i] for i in va]
        log(f"held out {len(valid)} of {len(corpus)} clips by file-name hash (data.valid_fraction)")
    else:
        valid = []
    return train, valid


def cmd_train(args) -> int:
    from .training.trainer import Trainer

    run = Path(args.out)
    if args.resume and (run / "config.yaml").exists():
        cfg = load_config(path=run / "config.yaml", overrides=args.overrides)
        log(f"resuming with the run's own config ({run / 'config.yaml'})")
    else:
        if not args.resume and (run / "checkpoints" / "latest").exists():
            raise RuntimeError(f"{run} already holds a training run; pass --resume to continue it, "
                               "or choose another --out")
        cfg = load_config(preset=args.preset or "mqgan-refiner", path=args.config, overrides=args.overrides)
    train, valid = _load_corpora(cfg, args.data, args.valid_data)
    trainer = Trainer(cfg, run, train, valid, log=log, progress=not args.no_progress)
    n_params = sum(p.numel() for p in trainer.raw_model.parameters())
    log(f"training {cfg.name}: {n_params / 1e6:.2f}M generator parameters, {cfg.train.steps} steps, "
        f"batch {cfg.train.batch_size} x {cfg.data.segment_frames} frames, device {trainer.acc.device}")
    trainer.fit(resume=args.resume)
    log(f"done: checkpoint {run / 'checkpoints'}, logs {run / 'metrics.jsonl'}, samples {run / 'samples'}")
    return 0


def _load_tokenizer(path):
    from .models.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(path)


def _pairs(inp: Path, out: Path, in_suffixes: tuple[str, ...], out_suffix: str) -> list[tuple[Path, Path]]:
    """(input, output) file pairs: a single file, or every matching file in a folder tree."""
    if inp.is_dir():
        files = sorted(p for p in inp.rglob("*") if p.is_file() and p.suffix.lower() in in_suffixes)
        if not files:
            raise FileNotFoundError(f"{inp}: no {'/'.join(in_suffixes)} files found")
        return [(f, (out / f.relative_to(inp)).with_suffix(out_suffix)) for f in files]
    if not inp.exists():
        raise FileNotFoundError(f"{inp}: no such file or folder")
    return [(inp, out)]


def _run_files(pairs, fn) -> int:
    """Apply fn to every pair; a bad file is reported and counted, the rest still run."""
    failed = 0
    for src, dst in pairs:
        try:
            log(fn(src, dst))
        except (ValueError, OSError) as e:
            failed += 1
            log(f"skipped {src}: {e}")
    if len(pairs) > 1:
        log(f"{len(pairs) - failed} of {len(pairs)} files done" + (f", {failed} skipped" if failed else ""))
    return 1 if failed == len(pairs) else 0


def _mel_of(tok, path: Path) -> torch.Tensor:
    from .frontends.audio_io import load_audio

    audio = load_audio(path, tok.config.model.mel.sample_rate)
    return tok.frontend(torch.from_numpy(audio))


def cmd_encode(args) -> int:
    from .frontends.audio_io import AUDIO_EXTENSIONS
    from .tokens_io import save_tokens

    tok = _load_tokenizer(args.checkpoint)

    def one(src: Path, dst: Path) -> str:
        tokens = tok.encode(_mel_of(tok, src)).cpu().numpy()
        path = save_tokens(dst, tokens, tok, extra={"source": src.name})
        return f"{src} -> {path} ({tokens.shape[-1]} tokens, {tokens.shape[-1] / tok.tokens_per_second:.2f} s)"

    return _run_files(_pairs(Path(args.input), Path(args.output), AUDIO_EXTENSIONS, ".npy"), one)


def _writer(tok, args):
    from .frontends.audio_io import save_wav
    from .vocoders import vocoder_for

    vocoder = vocoder_for(tok.config.model.mel, prefer=args.vocoder)

    def write(mel: torch.Tensor, dst: Path) -> str:
        if args.save_mel:
            np.save(dst.with_suffix(".mel.npy"), mel.cpu().numpy())
        save_wav(dst, vocoder(mel).cpu().numpy(), vocoder.sample_rate)
        return f"{dst} ({vocoder.name})"

    return write


def cmd_decode(args) -> int:
    from .tokens_io import load_tokens

    tok = _load_tokenizer(args.checkpoint)
    write = _writer(tok, args)

    def one(src: Path, dst: Path) -> str:
        tokens, _ = load_tokens(src, tok)
        return f"{src} -> " + write(tok.decode(torch.from_numpy(tokens.astype(np.int64)), refined=not args.draft), dst)

    return _run_files(_pairs(Path(args.input), Path(args.output), (".npy",), ".wav"), one)


def cmd_reconstruct(args) -> int:
    from .frontends.audio_io import AUDIO_EXTENSIONS

    tok = _load_tokenizer(args.checkpoint)
    write = _writer(tok, args)

    def one(src: Path, dst: Path) -> str:
        return f"{src} -> " + write(tok.reconstruct(_mel_of(tok, src), refined=not args.draft), dst)

    return _run_files(_pairs(Path(args.input), Path(args.output), AUDIO_EXTENSIONS, ".wav"), one)


def cmd_eval(args) -> int:
    from .data.audio_corpus import load_mel_corpus
    from .evaluation.report import write_mel_report
    from .vocoders import vocoder_for

    tok = _load_tokenizer(args.checkpoint)
    cfg = tok.config
    corpus = load_mel_corpus(args.data, tok.frontend, min_seconds=cfg.data.min_seconds,
                             max_seconds=cfg.data.max_seconds, log=log)
    out = Path(args.out) if args.out else Path(args.checkpoint) / "report"
    vocoder = vocoder_for(cfg.model.mel, prefer=args.vocoder)
    metrics = write_mel_report(tok, corpus, out, vocoder, args.examples, checkpoint=args.checkpoint)
    keys = ("draft_l1", "draft_mse", "refined_l1", "refined_mse", "codebook_usage", "perplexity",
            "tokens_per_second", "bits_per_second")
    log(json.dumps({k: round(metrics[k], 4) for k in keys if k in metrics}, indent=1))
    log(f"report written to {out} (metrics.json, spectrogram PNGs, WAVs through {vocoder.name})")
    return 0


def cmd_info(args) -> int:
    if args.presets or not args.checkpoint:
        log("presets: " + ", ".join(available_presets()))
        return 0
    from .models.tokenizer import resolve_checkpoint_dir

    tok = _load_tokenizer(args.checkpoint)
    cfg = tok.config
    m = cfg.model
    n = lambda mod: sum(p.numel() for p in mod.parameters()) if mod is not None else 0  # noqa: E731
    state = resolve_checkpoint_dir(args.checkpoint) / "train_state.json"
    info = {
        "checkpoint": str(resolve_checkpoint_dir(args.checkpoint)),
        "name": cfg.name, "tokenizer_id": tok.tokenizer_id,
        "parameters": {"total": n(tok), "encoder": n(tok.encoder), "decoder": n(tok.decoder),
                       "refiner": n(tok.refiner)},
        "mel": f"{m.mel.sample_rate} Hz, n_fft {m.mel.n_fft}, hop {m.mel.hop_length}, {m.mel.n_mels} mels, "
               f"fmax {m.mel.fmax}, {m.mel.mel_scale}",
        "quantizer": f"{m.quantizer.kind} levels {m.quantizer.levels} = {tok.codebook_size} codes",
        "refiner": m.refiner.mode if m.refiner.enabled else "off",
        "tokens_per_second": round(tok.tokens_per_second, 2), "bits_per_second": round(tok.bits_per_second, 1),
        "trained_steps": _trained_steps(state),
    }
    log(json.dumps(info, indent=1))
    return 0


def _trained_steps(state_json: Path) -> int | None:
    if not state_json.is_file():
        return None
    for key, value in json.loads(state_json.read_text()).get("__dict__", []):
        if key == ["str", "step"]:
            return value
    return None

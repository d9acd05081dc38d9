"""What each `vqkit` verb does (argument parsing lives in cli.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .config import Config, load_config


def log(msg: str) -> None:
    # under torchrun / accelerate launch every process runs this code; one of them speaks
    if os.environ.get("RANK", "0") == "0":
        print(msg, flush=True)


def cmd_data(args) -> int:
    if args.corpus == "demo-images":
        from .data.demo_images import make_demo_images

        manifest = make_demo_images(args.out, log=log)
        log(f"demo images ready in {args.out} (see ATTRIBUTION.txt)")
        return 0
    from .data.demo import make_demo_speech

    manifest = make_demo_speech(args.out, log=log, source=args.source)
    log(f"demo speech ready in {args.out}: {manifest['train_count']} train clips, "
        f"{manifest['heldout_count']} held-out clips (source: {manifest['source']}; see ATTRIBUTION.txt)")
    return 0


def load_corpus(cfg, folder: str):
    """The folder's usable items as a corpus: log-mel clips or images, bad files skipped and counted."""
    if cfg.model.modality == "image":
        from .data.image_corpus import load_image_corpus

        return load_image_corpus(folder, channels=cfg.model.image.channels, log=log)
    from .data.audio_corpus import load_mel_corpus
    from .frontends.mel import MelFrontend

    return load_mel_corpus(folder, MelFrontend(cfg.model.mel), min_seconds=cfg.data.min_seconds,
                           max_seconds=cfg.data.max_seconds, log=log)


def corpus_items(corpus) -> list[torch.Tensor]:
    return list(corpus.images) if hasattr(corpus, "images") else [c.mel for c in corpus.clips]


def _corpus_and_items(cfg, folder: str):
    """(corpus, items) of a folder: with data.feature_cache, log-mels cached on disk and memory-mapped."""
    if not getattr(cfg.data, "feature_cache", None):   # a mel data key
        corpus = load_corpus(cfg, folder)
        return corpus, corpus_items(corpus)
    from .data.feature_cache import cached_mel_corpus
    from .frontends.mel import MelFrontend

    corpus = cached_mel_corpus(folder, MelFrontend(cfg.model.mel), cfg.data.feature_cache,
                               min_seconds=cfg.data.min_seconds, max_seconds=cfg.data.max_seconds, log=log,
                               dtype=cfg.data.feature_cache_dtype)
    return corpus, corpus.mels


def _pick(items, indices: list[int]):
    return items.subset(indices) if hasattr(items, "subset") else [items[i] for i in indices]


def _load_corpora(cfg, data: str, valid_data: str | None):
    from .data.audio_corpus import split_by_hash

    corpus, train = _corpus_and_items(cfg, data)
    if valid_data:
        valid = _corpus_and_items(cfg, valid_data)[1]
    elif cfg.data.valid_fraction > 0 and len(train) >= 2:
        tr, va = split_by_hash(corpus.relative_paths(), cfg.data.valid_fraction)
        train, valid = _pick(train, tr), _pick(train, va)
        log(f"held out {len(valid)} of {len(train) + len(valid)} files by file-name hash (data.valid_fraction)")
    else:
        valid = []
    if getattr(cfg.data, "feature_cache", None):
        from .data.feature_cache import AsTensors

        valid = AsTensors(valid)   # held-out clips are evaluated whole, as tensors
    return train, valid


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
    from .io.paths import check_output_folder, refuse_overlap

    check_output_folder(Path(args.out), "--out")
    refuse_overlap(Path(args.out), "--out", [(flag, Path(p) if p else None) for flag, p in inputs])


def cmd_train(args) -> int:
    from .training.budget import check_training_memory
    from .training.trainer import Trainer

    run = Path(args.out)
    check_run_folder(args, [("--data", args.data), ("--valid-data", args.valid_data)])
    cfg = run_config(args, "mqgan-refiner")
    check_training_memory(cfg)   # a size that cannot fit is refused now, not after loading the data
    train, valid = _load_corpora(cfg, args.data, args.valid_data)
    trainer = Trainer(cfg, run, train, valid, log=log, progress=not args.no_progress)
    n_params = sum(p.numel() for p in trainer.raw_model.parameters())
    crop = (f"{cfg.data.image_size}x{cfg.data.image_size} crops" if cfg.model.modality == "image"
            else f"{cfg.data.segment_frames} frames")
    log(f"training {cfg.name}: {n_params / 1e6:.2f}M generator parameters, {cfg.train.steps} steps, "
        f"batch {cfg.train.batch_size} x {crop}, device {trainer.acc.device}")
    trainer.fit(resume=args.resume or False)
    ended = "stopped by train.max_minutes" if trainer.stopped_early else "done"
    log(f"{ended}: checkpoint {run / 'checkpoints'}, logs {run / 'metrics.jsonl'}, samples {run / 'samples'}")
    return 0


def _load_tokenizer(path):
    from .models.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(path)


def _pairs(inp: Path, out: Path, in_suffixes: tuple[str, ...], out_suffix: str,
           keep_suffix: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) file pairs: a single file, or every matching file in a folder tree, each
    output with `out_suffix` (keep_suffix: a single output keeps the name given). No output may be
    an input or lie in the input folder (io.paths.refuse_overwriting_inputs)."""
    from .io.paths import OutputPathError, outside_output, refuse_overwriting_inputs

    if inp.is_dir():
        if out.exists() and not out.is_dir():
            raise OutputPathError(f"-o {out}: is a file; a folder input ({inp}) writes a folder of outputs")
        found = sorted(p for p in inp.rglob("*") if p.is_file() and p.suffix.lower() in in_suffixes)
        files = outside_output(inp, found, out)
        if len(files) < len(found):
            log(f"not reading {len(found) - len(files)} files in {out}: it is the output folder, inside the input "
                "folder, so they are outputs, never inputs")
        if not files:
            raise FileNotFoundError(f"{inp}: no {'/'.join(in_suffixes)} files found")
        pairs = [(f, (out / f.relative_to(inp)).with_suffix(out_suffix)) for f in files]
    elif not inp.exists():
        raise FileNotFoundError(f"{inp}: no such file or folder")
    elif out.is_dir():   # like cp: into the folder, named after the input
        pairs = [(inp, (out / inp.name).with_suffix(out_suffix))]
    else:
        pairs = [(inp, out if keep_suffix else out.with_suffix(out_suffix))]
    refuse_overwriting_inputs(inp, pairs, out)
    return pairs


def _failure(src: Path, dst: Path, e: Exception) -> str:
    """The skip line of one file: an output problem names the output, an input problem the input
    (once: most errors start with the file's name already)."""
    from .io.files import WriteError

    text = str(e) if isinstance(e, (ValueError, OSError)) and str(e) else f"{type(e).__name__}: {e}".rstrip(": ")
    if isinstance(e, WriteError):
        return f"skipped {src}: its output {text}"
    return f"skipped {text}" if text.startswith(str(src)) else f"skipped {src}: {text}"


def _run_files(pairs, fn, quiet: bool = False) -> int:
    """Apply fn to every pair; a file that fails in any way (MemoryError too) is reported and
    counted, the rest still run. Only KeyboardInterrupt / SystemExit stop the loop."""
    failed = 0
    for src, dst in pairs:
        try:
            done = fn(src, dst)
            if not quiet:
                log(done)
        except Exception as e:
            if os.environ.get("VQKIT_DEBUG"):
                raise
            failed += 1
            log(_failure(src, dst, e))
    if len(pairs) > 1:
        log(f"{len(pairs) - failed} of {len(pairs)} files done" + (f", {failed} skipped" if failed else ""))
    return 1 if failed == len(pairs) else 0


def _signal_of(tok, path: Path, args) -> torch.Tensor:
    """An image file as the tokenizer's input, in [-1, 1] (audio files are streamed: models/audio_files.py)."""
    from .frontends.image import load_image

    return load_image(path, channels=tok.config.model.image.channels, max_pixels=args.max_pixels)


def _suffixes(tok) -> tuple[tuple[str, ...], str]:
    """(input file suffixes, output suffix) of the tokenizer's modality."""
    if tok.modality == "image":
        from .frontends.image import IMAGE_EXTENSIONS

        return IMAGE_EXTENSIONS, ".png"
    from .frontends.audio_io import AUDIO_EXTENSIONS

    return AUDIO_EXTENSIONS, ".wav"


def cmd_encode(args) -> int:
    from .tokens_io import save_tokens

    tok = _load_tokenizer(args.checkpoint)

    def one(src: Path, dst: Path) -> str:
        if tok.modality == "mel":   # read block by block: any length in bounded memory
            from .models.audio_files import encode_file

            tokens = encode_file(tok, src).cpu().numpy()
        else:
            tokens = tok.encode(_signal_of(tok, src, args)).cpu().numpy()
        path = save_tokens(dst, tokens, tok, extra={"source": src.name})
        if tok.modality == "image":
            return f"{src} -> {path} (token grid {list(tokens.shape)}, {tokens.size * tok.bits_per_token:.0f} bits)"
        return f"{src} -> {path} ({tokens.shape[-1]} tokens, {tokens.shape[-1] / tok.tokens_per_second:.2f} s)"

    return _run_files(_pairs(Path(args.input), Path(args.output), _suffixes(tok)[0], ".npy"), one, args.quiet)


def _outputs(tok, args):
    """(decode(tokens, dst), reconstruct(src, dst)) writing the modality's output files. Audio goes
    through the streams (any length, bounded memory) and the vocoder, one atomic write per file."""
    refined = not args.draft
    if tok.modality == "image":
        from .frontends.image import save_image

        def write_image(img: torch.Tensor, dst: Path) -> str:
            save_image(dst, img.clamp(-1, 1).cpu())
            return str(dst)

        return (lambda t, dst: write_image(tok.decode(t, refined=refined), dst),
                lambda src, dst: write_image(tok.reconstruct(_signal_of(tok, src, args), refined=refined), dst))
    from .models.audio_files import decode_to_wav, reconstruct_file
    from .vocoders import vocoder_for

    vocoder = vocoder_for(tok.config.model.mel, prefer=args.vocoder)
    mel_file = (lambda dst: dst.with_suffix(".mel.npy")) if args.save_mel else (lambda dst: None)

    def decode(t: torch.Tensor, dst: Path) -> str:
        decode_to_wav(tok, t, vocoder, dst, refined, mel_file(dst))
        return f"{dst} ({vocoder.name})"

    def reconstruct(src: Path, dst: Path) -> str:
        reconstruct_file(tok, src, dst, vocoder, refined, mel_file(dst))
        return f"{dst} ({vocoder.name})"

    return decode, reconstruct


def cmd_decode(args) -> int:
    from .tokens_io import load_tokens

    tok = _load_tokenizer(args.checkpoint)
    decode = _outputs(tok, args)[0]

    def one(src: Path, dst: Path) -> str:
        tokens, _ = load_tokens(src, tok)
        rows = torch.from_numpy(tokens.astype(np.int64))
        if rows.dim() == tok.token_dims:
            return f"{src} -> " + decode(rows, dst)
        # a file of several examples (e.g. (2, 86) mel tokens): one output per row, name_0, name_1, ...
        outs = [decode(row, dst.with_name(f"{dst.stem}_{i}{dst.suffix}")) for i, row in enumerate(rows)]
        return f"{src} -> " + ", ".join(outs)

    ins, out = (".npy",), _suffixes(tok)[1]
    return _run_files(_pairs(Path(args.input), Path(args.output), ins, out, tok.modality == "mel"), one, args.quiet)


def cmd_reconstruct(args) -> int:
    tok = _load_tokenizer(args.checkpoint)
    reconstruct = _outputs(tok, args)[1]

    def one(src: Path, dst: Path) -> str:
        return f"{src} -> " + reconstruct(src, dst)

    ins, out = _suffixes(tok)
    return _run_files(_pairs(Path(args.input), Path(args.output), ins, out, tok.modality == "mel"), one, args.quiet)


def _lpips_for(tok, args):
    """LPIPS for image reports when VGG16 + LPIPS head weights are given (flags or the config)."""
    if tok.modality != "image":
        return None
    vgg = args.vgg_weights or tok.config.loss.vgg_weights
    heads = args.lpips_weights or tok.config.loss.lpips_weights
    if not (vgg or heads):
        return None
    if not (vgg and heads):
        raise FileNotFoundError("LPIPS needs both --vgg-weights (torchvision vgg16) and --lpips-weights "
                                "(the lpips wheel's weights/v0.1/vgg.pth)")
    from .losses.perceptual import LPIPS, load_lpips_heads, load_vgg16

    return LPIPS(load_vgg16(vgg, classifier=False), load_lpips_heads(heads)).eval()


def cmd_eval(args) -> int:
    from .evaluation.report import evaluate_folder

    tok = _load_tokenizer(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.checkpoint) / "report"
    vocoder = inception = None
    if tok.modality == "image":
        if args.inception_weights:
            from .evaluation.fid import load_inception

            inception = load_inception(args.inception_weights).eval()
    else:
        from .vocoders import vocoder_for

        vocoder = vocoder_for(tok.config.model.mel, prefer=args.vocoder)
    from .modalities import modality_of

    record = evaluate_folder(tok, modality_of(tok), args.data, out, args.examples, vocoder=vocoder, max_vocoded=args.max_vocoded,
                             lpips=_lpips_for(tok, args), inception=inception, crop=args.crop or None,
                             checkpoint=args.checkpoint, log=log, progress=not args.no_progress,
                             max_pixels=args.max_pixels)
    m = record["metrics"]
    keys = (("draft_psnr", "draft_ssim", "refined_psnr", "refined_ssim", "lpips", "rfid") if tok.modality == "image"
            else ("draft_l1", "draft_mse", "refined_l1", "refined_mse", "vocoded_mr_stft", "vocoded_si_sdr",
                  "vocoded_pesq_wb", "vocoded_stoi", "draft_vocoded_pesq_wb", "draft_vocoded_stoi",
                  "draft_gv_ratio", "refined_gv_ratio", "draft_flux_ratio", "refined_flux_ratio",
                  "draft_ms_distance_db", "refined_ms_distance_db", "tokens_per_second", "bits_per_second"))
    keys += ("codebook_usage", "perplexity") + (("token_grid", "bits_per_image") if tok.modality == "image" else ())
    log(json.dumps({k: (round(m[k], 4) if isinstance(m[k], float) else m[k]) for k in keys if k in m}, indent=1))
    log(f"report written to {out} (index.html, metrics.json; {record['data']['files']} files"
        + (f", {sum(record['data']['skipped'].values())} skipped" if record["data"]["skipped"] else "") + ")")
    return 0

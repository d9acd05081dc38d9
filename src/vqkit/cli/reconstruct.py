"""`vqkit reconstruct CKPT INPUT -o OUT`: audio/image -> tokens -> audio/image, for a file or a folder."""
from __future__ import annotations

from pathlib import Path

from .files import add_file_parser, batch_size, file_pairs, run_batched, run_files, worker_count
from .shared import load_tokenizer


def add_parser(sub) -> None:
    add_file_parser(sub, "reconstruct", "audio/image file or folder -> tokens -> audio/images",
                    reads_signals=True, writes_signals=True)


def run(args) -> int:
    from ..modalities import modality_of

    tok = load_tokenizer(args.checkpoint)
    tok.check_stages(args.stages, "--stages")   # once, before any file
    modality = modality_of(tok)
    reconstruct = modality.writers(tok, not args.draft, args.max_pixels, args.vocoder, args.save_mel, args.stages)[1]

    def one(src: Path, dst: Path) -> str:
        return f"{src} -> " + reconstruct(src, dst)

    pairs = file_pairs(Path(args.input), Path(args.output), modality.input_suffixes, modality.output_suffix,
                       modality.output_keeps_name)
    batch, workers = batch_size(args, tok), worker_count(args, tok)
    if batch is None:
        return run_files(pairs, one, args.quiet, workers)
    vocoder = modality.vocoder_of(tok, args.vocoder)

    def many(signals):
        outs = tok.decode_batch(tok.encode_batch(signals, **batch), not args.draft, args.stages, **batch)
        # cropped to the input's size, as reconstruct does
        return [y[(..., *(slice(0, n) for n in x.shape[1:]))] for x, y in zip(signals, outs)]

    def done(src: Path, dst: Path, signal) -> str:
        return f"{src} -> " + modality.write_signal(tok, signal, dst, vocoder, args.save_mel)

    return run_batched(pairs, lambda src: modality.read_signal(tok, src, args.max_pixels), many, done, one,
                       args.quiet, workers=workers)

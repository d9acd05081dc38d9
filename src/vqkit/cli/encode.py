"""`vqkit encode CKPT INPUT -o OUT`: an audio/image file -> tokens.npy, or a folder -> a folder."""
from __future__ import annotations

from pathlib import Path

from .files import add_file_parser, batch_size, file_pairs, run_batched, run_files, worker_count
from .shared import load_tokenizer


def add_parser(sub) -> None:
    add_file_parser(sub, "encode", "audio/image file or folder -> token .npy files",
                    reads_signals=True, writes_signals=False)


def run(args) -> int:
    from ..modalities import modality_of
    from ..tokens_io import save_tokens

    tok = load_tokenizer(args.checkpoint)
    modality = modality_of(tok)

    def one(src: Path, dst: Path) -> str:
        tokens, what = modality.encode_file(tok, src, args.max_pixels)
        return write(src, dst, tokens, what)

    def write(src: Path, dst: Path, tokens, what: str) -> str:
        path = save_tokens(dst, tokens, tok, extra={"source": src.name})
        return f"{src} -> {path} ({what})"

    def done(src: Path, dst: Path, tokens) -> str:
        tokens = tokens.cpu().numpy()
        return write(src, dst, tokens, modality.token_text(tok, tokens))

    pairs = file_pairs(Path(args.input), Path(args.output), modality.input_suffixes, ".npy")
    batch, workers = batch_size(args, tok), worker_count(args, tok)
    if batch is None:
        return run_files(pairs, one, args.quiet, workers)
    return run_batched(pairs, lambda src: modality.read_signal(tok, src, args.max_pixels),
                       lambda signals: tok.encode_batch(signals, **batch), done, one, args.quiet,
                       workers=workers)

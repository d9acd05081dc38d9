"""`vqkit encode CKPT INPUT -o OUT`: an audio/image file -> tokens.npy, or a folder -> a folder."""
from __future__ import annotations

from pathlib import Path

from .files import add_file_parser, file_pairs, run_files
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
        path = save_tokens(dst, tokens, tok, extra={"source": src.name})
        return f"{src} -> {path} ({what})"

    return run_files(file_pairs(Path(args.input), Path(args.output), modality.input_suffixes, ".npy"), one, args.quiet)

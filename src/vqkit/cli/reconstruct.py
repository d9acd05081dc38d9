"""`vqkit reconstruct CKPT INPUT -o OUT`: audio/image -> tokens -> audio/image, for a file or a folder."""
from __future__ import annotations

from pathlib import Path

from .files import add_file_parser, file_pairs, file_suffixes, output_writers, run_files
from .shared import load_tokenizer


def add_parser(sub) -> None:
    add_file_parser(sub, "reconstruct", "audio/image file or folder -> tokens -> audio/images",
                    reads_signals=True, writes_signals=True)


def run(args) -> int:
    tok = load_tokenizer(args.checkpoint)
    reconstruct = output_writers(tok, args)[1]

    def one(src: Path, dst: Path) -> str:
        return f"{src} -> " + reconstruct(src, dst)

    ins, out = file_suffixes(tok)
    return run_files(file_pairs(Path(args.input), Path(args.output), ins, out, tok.modality == "mel"), one, args.quiet)

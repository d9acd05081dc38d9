"""`vqkit reconstruct CKPT INPUT -o OUT`: audio/image -> tokens -> audio/image, for a file or a folder."""
from __future__ import annotations

from pathlib import Path

from .files import add_file_parser, file_pairs, run_files
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
    return run_files(pairs, one, args.quiet)

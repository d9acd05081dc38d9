"""`vqkit encode CKPT INPUT -o OUT`: an audio/image file -> tokens.npy, or a folder -> a folder."""
from __future__ import annotations

from pathlib import Path

from .files import add_file_parser, file_pairs, file_suffixes, run_files, signal_of
from .shared import load_tokenizer


def add_parser(sub) -> None:
    add_file_parser(sub, "encode", "audio/image file or folder -> token .npy files",
                    reads_signals=True, writes_signals=False)


def run(args) -> int:
    from ..tokens_io import save_tokens

    tok = load_tokenizer(args.checkpoint)

    def one(src: Path, dst: Path) -> str:
        if tok.modality == "mel":   # read block by block: any length in bounded memory
            from ..models.audio_files import encode_file

            tokens = encode_file(tok, src).cpu().numpy()
        else:
            tokens = tok.encode(signal_of(tok, src, args)).cpu().numpy()
        path = save_tokens(dst, tokens, tok, extra={"source": src.name})
        if tok.modality == "image":
            return f"{src} -> {path} (token grid {list(tokens.shape)}, {tokens.size * tok.bits_per_token:.0f} bits)"
        return f"{src} -> {path} ({tokens.shape[-1]} tokens, {tokens.shape[-1] / tok.tokens_per_second:.2f} s)"

    return run_files(file_pairs(Path(args.input), Path(args.output), file_suffixes(tok)[0], ".npy"), one, args.quiet)

"""`vqkit decode CKPT TOKENS -o OUT`: tokens.npy -> audio/image, or a folder -> a folder."""
from __future__ import annotations

from pathlib import Path

from .files import add_file_parser, file_pairs, run_files, worker_count
from .shared import load_tokenizer


def add_parser(sub) -> None:
    add_file_parser(sub, "decode", "token .npy file or folder -> audio/images",
                    reads_signals=False, writes_signals=True)


def run(args) -> int:
    import numpy as np
    import torch

    from ..modalities import modality_of
    from ..tokens_io import load_tokens

    tok = load_tokenizer(args.checkpoint)
    tok.check_stages(args.stages, "--stages")   # once, before any file
    modality = modality_of(tok)
    decode = modality.writers(tok, not args.draft, None, args.vocoder, args.save_mel, args.stages)[0]

    def one(src: Path, dst: Path) -> str:
        tokens, _ = load_tokens(src, tok)
        rows = torch.from_numpy(tokens.astype(np.int64))
        if rows.dim() == tok.token_dims:
            return f"{src} -> " + decode(rows, dst)
        # a file of several examples (e.g. (2, 86) mel tokens): one output per row, name_0, name_1, ...
        outs = [decode(row, dst.with_name(f"{dst.stem}_{i}{dst.suffix}")) for i, row in enumerate(rows)]
        return f"{src} -> " + ", ".join(outs)

    pairs = file_pairs(Path(args.input), Path(args.output), (".npy",), modality.output_suffix, modality.output_keeps_name)
    return run_files(pairs, one, args.quiet, worker_count(args, tok))

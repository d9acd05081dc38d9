"""`vqkit <verb>`: one command line for every tokenizer.

    vqkit data demo-speech DIR | demo-images DIR
    vqkit train --preset mqgan-refiner --data DIR --out RUN [--valid-data DIR] [--resume [auto|CKPT]] [key=value ...]
    vqkit encode CKPT INPUT -o OUT        (file -> tokens.npy, or folder -> folder)
    vqkit decode CKPT TOKENS -o OUT       (tokens.npy -> wav, or folder -> folder)
    vqkit reconstruct CKPT INPUT -o OUT   (audio -> tokens -> audio; file or folder)
    vqkit eval CKPT --data DIR --out REPORT
    vqkit info CKPT                       (sizes, codebook, rates; mels: streaming and latency)
    vqkit stream CKPT in.wav -o out.wav [--chunk-ms 40]   (streaming on a file: latency, speed)
    vqkit train-prior --tokenizer CKPT --tokens DIR --out RUN [--preset prior-gpt|prior-maskgit] [key=value ...]
    vqkit sample PRIOR -n 16 -o OUT       (tokens sampled from a prior, decoded to images / audio)
    vqkit visualize-prior PRIOR --tokens DIR -o OUT   (teacher-forced top-1 predictions, NLL, accuracy)
    vqkit pack-tokens DIR -o STORE        (token files -> one sharded store, for corpora of millions of files)
    vqkit push-to-hub CKPT namespace/name [--private] [--token T] [--license L] [--stage DIR]
                                          (a tokenizer or prior + model card -> Hugging Face Hub)
    vqkit export CKPT --format onnx -o DIR   (ONNX encoder, decoder, mel frontend + export.json; docs/export.md)
CKPT may also be a Hugging Face Hub repo id (namespace/name) wherever no such local path exists.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError
from . import (data, decode, encode, evaluate, export, info, pack_tokens, push_to_hub, reconstruct, sample, stream,
               train, train_prior, visualize_prior)

# Each verb is a module here: add_parser(sub) declares its options beside run(args), which does it
# (eval's is evaluate.py: a module named eval would shadow the builtin). `vqkit --help` lists the
# verbs in this order.
VERBS = {"data": data, "train": train, "train-prior": train_prior, "sample": sample,
         "visualize-prior": visualize_prior, "pack-tokens": pack_tokens, "encode": encode, "decode": decode,
         "reconstruct": reconstruct, "eval": evaluate, "info": info, "stream": stream,
         "push-to-hub": push_to_hub, "export": export}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqkit", description="Train, evaluate and use discrete tokenizers.")
    sub = parser.add_subparsers(dest="verb", required=True)
    for module in VERBS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after flags (`... train.steps=10 --resume`): argparse alone would
    # stop at the first flag after a positional list.
    args, extra = parser.parse_known_args(argv)
    if args.verb in ("train", "train-prior"):
        if args.resume is not None and "=" in args.resume:   # `--resume train.steps=10`: an override
            args.overrides.append(args.resume)
            args.resume = "auto"
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = bool(os.environ.get("VQKIT_DEBUG"))   # set it to see the traceback of any error
    try:
        return VERBS[args.verb].run(args) or 0
    except KeyboardInterrupt:
        print(f"vqkit {args.verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        message, code = _explain(e)
        print(f"vqkit {args.verb}: {message}", file=sys.stderr)
        return code


# Known failure modes (bad files, configs, checkpoints, I/O): one clear line, exit 2.
KNOWN_ERRORS = (ConfigError, FileNotFoundError, ValueError, RuntimeError, OSError)


def _explain(e: Exception) -> tuple[str, int]:
    """(the one line to print, the exit code) for an exception that ended a command."""
    if isinstance(e, KNOWN_ERRORS):
        return f"error: {_one_line(e)}", 2
    if isinstance(e, MemoryError):
        return f"error: out of memory ({_one_line(e)}); try smaller inputs or sizes", 2
    if isinstance(e, ModuleNotFoundError):
        return (f"error: needs the Python package {e.name!r}, which is not installed "
                "(audio: pip install 'vqkit[audio]'; images: pip install 'vqkit[image]')", 2)
    # anything else is a bug: still one line by default, the traceback with VQKIT_DEBUG=1
    return (f"internal error ({type(e).__name__}: {_one_line(e)}); this is a bug, "
            "please report it (VQKIT_DEBUG=1 shows the traceback)", 1)


def _one_line(e: BaseException) -> str:
    """An exception's message on one line (YAML and torch messages span several)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return "; ".join(lines) or type(e).__name__


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
"""
from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError


def _add_train_prior(sub) -> None:
    from .shared import add_run_options

    p = sub.add_parser("train-prior", help="train a token prior (GPT or MaskGIT) on `vqkit encode` output")
    p.add_argument("--preset", default=None, help="prior-gpt (default) or prior-maskgit")
    p.add_argument("--tokenizer", required=True, help="the tokenizer checkpoint that made the tokens")
    p.add_argument("--tokens", required=True, help="folder of token files from `vqkit encode`")
    p.add_argument("--valid-tokens", default=None, help="held-out token folder (default: a hash split)")
    add_run_options(p)


def _add_prior_verbs(sub) -> None:
    s = sub.add_parser("sample", help="sample tokens from a prior and decode them to images / audio")
    v = sub.add_parser("visualize-prior", help="SeQ-GAN's view: teacher-forced top-1 predictions of an AR prior")
    for p in (s, v):
        p.add_argument("prior", help="prior checkpoint or run directory")
        p.add_argument("-o", "--output", required=True, help="output folder (index.html and files)")
        p.add_argument("--tokenizer", default=None, help="tokenizer checkpoint (default: the one the prior recorded)")
        p.add_argument("--vocoder", choices=["auto", "hifigan", "griffin-lim"], default="auto")
    s.add_argument("-n", type=int, default=16, help="number of samples")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--temperature", type=float, default=None, help="default: the prior's sample.temperature")
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--steps", type=int, default=None, help="MaskGIT decoding passes (default: model.maskgit_steps)")
    s.add_argument("--label", default=None, help="class name or index (class-conditional priors)")
    s.add_argument("--seed", type=int, default=0)
    v.add_argument("--tokens", required=True, help="held-out token folder from `vqkit encode`")
    k = sub.add_parser("pack-tokens", help="pack a folder of token files into one sharded store (large corpora)")
    k.add_argument("tokens", help="folder of token files from `vqkit encode`")
    k.add_argument("-o", "--output", required=True, help="store directory (use it as --tokens)")
    k.add_argument("--shard-mb", type=int, default=256)
    v.add_argument("--examples", type=int, default=6, help="windows decoded side by side")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqkit", description="Train, evaluate and use discrete tokenizers.")
    sub = parser.add_subparsers(dest="verb", required=True)
    verbs = _verb_modules()   # each declares its parser beside its handler
    verbs["data"].add_parser(sub)
    verbs["train"].add_parser(sub)
    _add_train_prior(sub)
    _add_prior_verbs(sub)
    for verb in ("encode", "decode", "reconstruct", "eval", "info", "stream"):
        verbs[verb].add_parser(sub)
    return parser


def _verb_modules() -> dict:
    from . import data, decode, encode, eval, info, reconstruct, stream, train

    return {"data": data, "train": train, "encode": encode, "decode": decode, "reconstruct": reconstruct,
            "eval": eval, "info": info, "stream": stream}


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
        from .. import prior_commands

        verb = _verb_modules().get(args.verb)
        if verb:
            return verb.run(args) or 0
        return getattr(prior_commands, f"cmd_{args.verb.replace('-', '_')}")(args) or 0
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


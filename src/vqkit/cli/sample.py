"""`vqkit sample PRIOR -n 16 -o OUT`: tokens sampled from a prior, decoded to images / audio."""
from __future__ import annotations

from pathlib import Path

from .shared import add_prior_options, log, prior_and_tokenizer


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="sample tokens from a prior and decode them to images / audio")
    add_prior_options(p)
    p.add_argument("-n", type=int, default=16, help="number of samples")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--temperature", type=float, default=None, help="default: the prior's sample.temperature")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--steps", type=int, default=None, help="MaskGIT decoding passes (default: model.maskgit_steps)")
    p.add_argument("--label", default=None, help="class name or index (class-conditional priors)")
    p.add_argument("--seed", type=int, default=0)


def _labels(prior, label: str | None, n: int) -> list[int] | None:
    if label is None:
        # a class-conditional prior without --label: cycle through the classes
        return [i % len(prior.class_names) for i in range(n)] if prior.class_names else None
    if not prior.class_names:
        raise ValueError("--label: this prior is unconditional")
    if label in prior.class_names:
        return [prior.class_names.index(label)] * n
    if label.isdigit() and int(label) < len(prior.class_names):
        return [int(label)] * n
    raise ValueError(f"--label {label!r}: not one of the prior's classes ({', '.join(prior.class_names)})")


def run(args) -> int:
    from ..evaluation.prior_report import write_samples

    prior, tok, write = prior_and_tokenizer(args)
    write_samples(prior, tok, Path(args.output), args.n, batch_size=args.batch_size,
                  labels=_labels(prior, args.label, args.n), write=write, seed=args.seed, log=log,
                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, steps=args.steps)
    return 0

"""`vqkit visualize-prior PRIOR --tokens DIR -o OUT`: SeQ-GAN's view of an AR prior (teacher-forced
top-1 predictions, NLL, accuracy)."""
from __future__ import annotations

from pathlib import Path

from .shared import add_prior_options, log, prior_and_tokenizer, refuse_output_overlap, token_corpus


def add_parser(sub) -> None:
    p = sub.add_parser("visualize-prior", help="SeQ-GAN's view: teacher-forced top-1 predictions of an AR prior")
    add_prior_options(p)
    p.add_argument("--tokens", required=True, help="held-out token folder from `vqkit encode`")
    p.add_argument("--examples", type=int, default=6, help="windows decoded side by side")


def run(args) -> int:
    from ..evaluation.prior_report import visualize_prior

    refuse_output_overlap(args.output, args.tokens, "--tokens")
    prior, tok, write = prior_and_tokenizer(args)
    corpus = token_corpus(args.tokens, tok.tokenizer_id, bool(prior.class_names))
    if prior.class_names:   # the corpus's folder indices -> the prior's class indices
        unknown = sorted(set(corpus.class_names) - set(prior.class_names))
        if unknown:
            raise ValueError(f"{args.tokens}: class folders {unknown[:3]} are not among the prior's classes")
        corpus.labels = [prior.class_names.index(corpus.class_names[i]) for i in corpus.labels]
    visualize_prior(prior, tok, corpus, Path(args.output), n_examples=args.examples, write=write, log=log)
    return 0

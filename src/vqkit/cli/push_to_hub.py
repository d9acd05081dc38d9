"""`vqkit push-to-hub CKPT namespace/name`: upload a tokenizer or token prior checkpoint (or a run's
latest) with a generated model card to the Hugging Face Hub; `--stage DIR` writes the folder instead."""
from __future__ import annotations

from pathlib import Path

from .shared import log


def add_parser(sub) -> None:
    p = sub.add_parser("push-to-hub", help="upload a tokenizer or prior, with a model card, to the Hugging Face Hub")
    p.add_argument("checkpoint", help="checkpoint or run directory (a tokenizer's or a token prior's)")
    p.add_argument("repo_id", help="Hub repository, namespace/name (created if it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--token", default=None, help="Hugging Face token (default: HF_TOKEN or `hf auth login`'s)")
    p.add_argument("--revision", default=None, help="branch to commit to (created from main if new; default main)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--license", default=None, help="licence of the weights for the card, e.g. apache-2.0 "
                                                   "(default: other, not stated)")
    p.add_argument("--data", default=None, help="a line on the training data (and its licence) for the card")
    p.add_argument("--tokenizer", default=None, help="priors: the tokenizer's repo id or path, named in the card")
    p.add_argument("--stage", default=None, metavar="DIR",
                   help="write the files that would be uploaded into DIR and upload nothing")


def run(args) -> int:
    from ..io.paths import OutputPathError
    from ..io.weights import resolve_checkpoint_dir
    from ..priors.prior import META_NAME

    card = {"license": args.license, "data": args.data}
    if (resolve_checkpoint_dir(args.checkpoint) / META_NAME).is_file():
        from ..priors.hub_card import stage_prior
        from ..priors.prior import TokenPrior

        model, stage, what = TokenPrior.from_pretrained(args.checkpoint), stage_prior, "prior"
        card["tokenizer"] = args.tokenizer
    else:
        from ..models.hub_card import stage_tokenizer
        from .shared import load_tokenizer

        model, stage, what = load_tokenizer(args.checkpoint), stage_tokenizer, "tokenizer"
        if args.tokenizer:
            raise ValueError("--tokenizer applies to token priors; this checkpoint is a tokenizer")
    if args.stage:
        if Path(args.stage).exists() and (not Path(args.stage).is_dir() or any(Path(args.stage).iterdir())):
            raise OutputPathError(f"--stage {args.stage}: not an empty folder; staging writes config.yaml, "
                                  f"model.safetensors and README.md there, so give a new or empty one")
        folder = stage(model, args.stage, args.repo_id, source=model._loaded_from, **card)
        log(f"staged {what} for {args.repo_id} in {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))
        return 0
    info = model.push_to_hub(args.repo_id, **card, token=args.token, private=args.private or None,
                             revision=args.revision, commit_message=args.message)
    log(f"pushed {what} to {args.repo_id}: {getattr(info, 'commit_url', info)}")
    return 0

"""`vqkit pack-tokens DIR -o STORE`: token files -> one sharded store, for corpora of millions of files."""
from __future__ import annotations

from .shared import log, refuse_output_overlap


def add_parser(sub) -> None:
    p = sub.add_parser("pack-tokens", help="pack a folder of token files into one sharded store (large corpora)")
    p.add_argument("tokens", help="folder of token files from `vqkit encode`")
    p.add_argument("-o", "--output", required=True, help="store directory (use it as --tokens)")
    p.add_argument("--shard-mb", type=int, default=256)


def run(args) -> int:
    from ..priors.token_data import pack_tokens

    refuse_output_overlap(args.output, args.tokens, "the token folder")
    pack_tokens(args.tokens, args.output, shard_bytes=args.shard_mb * 2**20, log=log)
    return 0

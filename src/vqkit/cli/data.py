"""`vqkit data demo-speech DIR | demo-images DIR`: build a demo corpus."""
from __future__ import annotations

from .shared import log


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="build a demo corpus")
    p.add_argument("corpus", choices=["demo-speech", "demo-images"])
    p.add_argument("out", help="output folder")
    p.add_argument("--source", choices=["auto", "asterisk", "espeak"], default="auto")


def run(args) -> int:
    if args.corpus == "demo-images":
        from ..data.demo_images import make_demo_images

        manifest = make_demo_images(args.out, log=log)
        log(f"demo images ready in {args.out} (see ATTRIBUTION.txt)")
        return 0
    from ..data.demo import make_demo_speech

    manifest = make_demo_speech(args.out, log=log, source=args.source)
    log(f"demo speech ready in {args.out}: {manifest['train_count']} train clips, "
        f"{manifest['heldout_count']} held-out clips (source: {manifest['source']}; see ATTRIBUTION.txt)")
    return 0

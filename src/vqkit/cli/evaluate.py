"""`vqkit eval CKPT --data DIR --out REPORT`: held-out metrics and a report folder."""
from __future__ import annotations

import json
from pathlib import Path

from .shared import add_max_pixels, load_tokenizer, log


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="held-out metrics and a report folder")
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="folder of held-out audio or images")
    p.add_argument("--out", default=None, help="report folder (default: CKPT/report)")
    p.add_argument("--examples", type=int, default=8, help="clips rendered as pictures and audio")
    p.add_argument("--vocoder", choices=["auto", "hifigan", "griffin-lim"], default="auto")
    p.add_argument("--max-vocoded", type=int, default=None,
                   help="audio: vocode and score only the first N clips (default: all)")
    p.add_argument("--crop", type=int, default=512, help="images: centre crop side (default 512; 0 = whole image)")
    p.add_argument("--vgg-weights", default=None, help="images: torchvision vgg16 weights, for LPIPS")
    p.add_argument("--lpips-weights", default=None, help="images: LPIPS linear heads (lpips wheel's vgg.pth)")
    p.add_argument("--inception-weights", default=None,
                   help="images: pytorch-fid's pt_inception-2015-12-05-6726825d.pth, for rFID")
    p.add_argument("--no-progress", action="store_true")
    add_max_pixels(p)


def _lpips_for(tok, args):
    """LPIPS for image reports when VGG16 + LPIPS head weights are given (flags or the config; the
    loss block of a model with a perceptual loss names them)."""
    vgg = args.vgg_weights or getattr(tok.config.loss, "vgg_weights", None)
    heads = args.lpips_weights or getattr(tok.config.loss, "lpips_weights", None)
    if not (vgg or heads):
        return None
    if not (vgg and heads):
        raise FileNotFoundError("LPIPS needs both --vgg-weights (torchvision vgg16) and --lpips-weights "
                                "(the lpips wheel's weights/v0.1/vgg.pth)")
    from ..losses.perceptual import LPIPS, load_lpips_heads, load_vgg16

    return LPIPS(load_vgg16(vgg, classifier=False), load_lpips_heads(heads)).eval()


def run(args) -> int:
    from ..evaluation.report import evaluate_folder
    from ..io.hub import is_repo_id
    from ..modalities import modality_of

    if args.out is None and is_repo_id(args.checkpoint):   # CKPT/report would make a local folder named like the repo
        raise ValueError(f"{args.checkpoint} is a Hugging Face Hub repo: pass --out for the report folder")
    tok = load_tokenizer(args.checkpoint)
    modality = modality_of(tok)
    out = Path(args.out) if args.out else Path(args.checkpoint) / "report"
    vocoder, inception = modality.report_models(tok, args.vocoder, args.inception_weights)
    record = evaluate_folder(tok, modality, args.data, out, args.examples, vocoder=vocoder, max_vocoded=args.max_vocoded,
                             lpips=_lpips_for(tok, args), inception=inception, crop=args.crop or None,
                             checkpoint=args.checkpoint, log=log, progress=not args.no_progress,
                             max_pixels=args.max_pixels)
    m = record["metrics"]
    keys = modality.summary_keys + tuple(k for k in m if k.startswith("stages_"))   # residual quantisers, per k
    log(json.dumps({k: (round(m[k], 4) if isinstance(m[k], float) else m[k]) for k in keys if k in m}, indent=1))
    log(f"report written to {out} (index.html, metrics.json; {record['data']['files']} files"
        + (f", {sum(record['data']['skipped'].values())} skipped" if record["data"]["skipped"] else "") + ")")
    return 0

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
    """LPIPS for image reports when VGG16 + LPIPS head weights are given (flags or the config)."""
    vgg = args.vgg_weights or tok.config.loss.vgg_weights
    heads = args.lpips_weights or tok.config.loss.lpips_weights
    if tok.modality != "image" or not (vgg or heads):
        return None
    if not (vgg and heads):
        raise FileNotFoundError("LPIPS needs both --vgg-weights (torchvision vgg16) and --lpips-weights "
                                "(the lpips wheel's weights/v0.1/vgg.pth)")
    from ..losses.perceptual import LPIPS, load_lpips_heads, load_vgg16

    return LPIPS(load_vgg16(vgg, classifier=False), load_lpips_heads(heads)).eval()


def run(args) -> int:
    from ..evaluation.report import evaluate_folder

    tok = load_tokenizer(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.checkpoint) / "report"
    vocoder = inception = None
    if tok.modality == "image":
        if args.inception_weights:
            from ..evaluation.fid import load_inception

            inception = load_inception(args.inception_weights).eval()
    else:
        from ..vocoders import vocoder_for

        vocoder = vocoder_for(tok.config.model.mel, prefer=args.vocoder)
    record = evaluate_folder(tok, args.data, out, args.examples, vocoder=vocoder, max_vocoded=args.max_vocoded,
                             lpips=_lpips_for(tok, args), inception=inception, crop=args.crop or None,
                             checkpoint=args.checkpoint, log=log, progress=not args.no_progress,
                             max_pixels=args.max_pixels)
    m = record["metrics"]
    keys = (("draft_psnr", "draft_ssim", "refined_psnr", "refined_ssim", "lpips", "rfid") if tok.modality == "image"
            else ("draft_l1", "draft_mse", "refined_l1", "refined_mse", "vocoded_mr_stft", "vocoded_si_sdr",
                  "vocoded_pesq_wb", "vocoded_stoi", "draft_vocoded_pesq_wb", "draft_vocoded_stoi",
                  "draft_gv_ratio", "refined_gv_ratio", "draft_flux_ratio", "refined_flux_ratio",
                  "draft_ms_distance_db", "refined_ms_distance_db", "tokens_per_second", "bits_per_second"))
    keys += ("codebook_usage", "perplexity") + (("token_grid", "bits_per_image") if tok.modality == "image" else ())
    log(json.dumps({k: (round(m[k], 4) if isinstance(m[k], float) else m[k]) for k in keys if k in m}, indent=1))
    log(f"report written to {out} (index.html, metrics.json; {record['data']['files']} files"
        + (f", {sum(record['data']['skipped'].values())} skipped" if record["data"]["skipped"] else "") + ")")
    return 0

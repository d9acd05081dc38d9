"""`vqkit info CKPT`: what a checkpoint is (sizes, codebook, rates, streaming and latency), or
`vqkit info --presets`: the presets."""
from __future__ import annotations

import json

from .shared import load_tokenizer, log


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="describe a checkpoint (or list presets)")
    p.add_argument("checkpoint", nargs="?")
    p.add_argument("--presets", action="store_true")


def run(args) -> int:
    from ..config import available_presets
    from ..io.run_records import checkpoint_step, training_data
    from ..io.weights import resolve_checkpoint_dir
    from ..modalities import modality_of

    if args.presets or not args.checkpoint:
        log("presets: " + ", ".join(available_presets()))
        log("prior presets (train-prior): " + ", ".join(available_presets("prior")))
        return 0
    tok = load_tokenizer(args.checkpoint)
    cfg = tok.config
    m = cfg.model
    n = lambda mod: sum(p.numel() for p in mod.parameters()) if mod is not None else 0  # noqa: E731
    ckpt = resolve_checkpoint_dir(args.checkpoint)
    step = checkpoint_step(ckpt)
    q = m.quantizer
    info = {
        "checkpoint": str(ckpt),
        "name": cfg.name, "modality": m.modality, "tokenizer_id": tok.tokenizer_id,
        "parameters": {"total": n(tok), "encoder": n(tok.encoder), "decoder": n(tok.decoder),
                       "refiner": n(tok.refiner)},
        "backbone": f"{m.backbone.kind} {m.backbone.channels}, downsample {m.backbone.downsample}",
        "quantizer": q.describe(),
        "codebook_size": tok.codebook_size, "bits_per_token": round(tok.bits_per_token, 2),
        **({"stages": tok.stages, "bits_per_position": round(tok.bits_per_position, 2)} if tok.stages else {}),
        "refiner": m.refiner.mode if m.refiner is not None else "off",
        "trained_steps": step,
        # what the run recorded of its data, up to this checkpoint's step (None: no run record)
        "training_data": training_data(ckpt, step),
    }
    info.update(modality_of(tok).facts(tok))
    log(json.dumps(info, indent=1))
    return 0


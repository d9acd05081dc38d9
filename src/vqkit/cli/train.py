"""`vqkit train --preset P --data DIR --out RUN`: train a tokenizer on a folder of audio files or images."""
from __future__ import annotations

from pathlib import Path

from .shared import add_run_options, check_run_folder, load_train_and_valid, log, run_config


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a tokenizer on a folder of audio files or images")
    p.add_argument("--preset", default=None, help="preset name (see `vqkit info --presets`)")
    p.add_argument("--data", required=True, help="folder of audio files or images (searched recursively)")
    p.add_argument("--valid-data", default=None, help="held-out folder (default: a hash split of --data)")
    add_run_options(p)


def run(args) -> int:
    from ..modalities import modality_of
    from ..training.budget import check_training_memory
    from ..training.trainer import Trainer

    run = Path(args.out)
    check_run_folder(args, [("--data", args.data), ("--valid-data", args.valid_data)])
    cfg = run_config(args, "mqgan-refiner")
    check_training_memory(cfg)   # a size that cannot fit is refused now, not after loading the data
    train, valid, data = load_train_and_valid(cfg, args.data, args.valid_data)
    trainer = Trainer(cfg, run, train, valid, log=log, progress=not args.no_progress)
    n_params = sum(p.numel() for p in trainer.raw_model.parameters())
    crop = modality_of(cfg).crop_text(cfg)
    log(f"training {cfg.name}: {n_params / 1e6:.2f}M generator parameters, {cfg.train.steps} steps, "
        f"batch {cfg.train.batch_size} x {crop}, device {trainer.acc.device}")
    trainer.fit(resume=args.resume or False, data=data)
    ended = "stopped by train.max_minutes" if trainer.stopped_early else "done"
    log(f"{ended}: checkpoint {run / 'checkpoints'}, logs {run / 'metrics.jsonl'}, samples {run / 'samples'}")
    return 0

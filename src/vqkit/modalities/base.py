"""What a modality is to the rest of vqkit: one object that knows its files, its corpus and crops,
its held-out evaluation, its report pieces and its discriminator. Tokenizer, trainer, report and
command line ask it instead of branching on the modality's name.

The tokenizer itself (a lower floor) reads the shape facts from the model config's modality
dataclass (config/model_schema.py: input_channels, spatial_dims, norm_init) and its frontend from
frontends.build_frontend. A new modality is a module here, one line in MODALITIES, a model config
dataclass and, when its signal needs one, a frontend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

# path -> (iterator of (label, item) to score, or None; skip reason; detail)
Pieces = Callable[[Path], tuple[Iterator[tuple[str, torch.Tensor]] | None, str | None, str]]


def stage_rates(key: str, rates: dict[str, float] | None, digits: int | None) -> dict:
    """{key: {k: rate rounded}} for `vqkit info` when the tokenizer's rate depends on its stages
    (Tokenizer.bits_by_stages), else nothing."""
    return {} if rates is None else {key: {k: round(v, digits) for k, v in rates.items()}}


class Modality:
    name: str = ""
    noun: str = ""                          # in messages: "no audio files found"
    input_suffixes: tuple[str, ...] = ()    # files encode / reconstruct / eval read
    output_suffix: str = ""                 # files decode / reconstruct write
    output_keeps_name: bool = False         # a single output keeps the name given (else: output_suffix)
    units: str = ""                         # what the report's numbers are measured in
    summary_keys: tuple[str, ...] = ()      # the report metrics `vqkit eval` prints
    padded_crops: bool = False              # crops of short items are padded (the batch's mask marks them)

    # ---- data ------------------------------------------------------------------------------
    def find_files(self, folder: Path) -> list[Path]:
        raise NotImplementedError

    def load_corpus(self, cfg, folder: str, log: Callable[[str], None]):
        """(corpus, items) of a training folder; bad files skipped and counted."""
        raise NotImplementedError

    def heldout_items(self, cfg, items):
        """Held-out items as the trainer's evaluation takes them (whole, as tensors)."""
        return items

    def batches(self, cfg, model, items, batch_size: int):
        """Step-indexed global batches of random crops (data/step_batches.py)."""
        raise NotImplementedError

    def crop_text(self, cfg) -> str:
        raise NotImplementedError

    def batch_size_key(self, cfg) -> tuple[str, int, int]:
        """(config key, its value, positions per example) that set one batch's size."""
        raise NotImplementedError

    def prepare(self, model, train_items) -> None:
        """Fit what the model learns from the data before training (mels: normalisation)."""

    # ---- models ----------------------------------------------------------------------------
    def discriminator(self, cfg) -> nn.Module:
        raise NotImplementedError

    # ---- evaluation ------------------------------------------------------------------------
    def evaluate_heldout(self, cfg, model, items, out_dir: Path, metrics, step: int) -> dict:
        """The trainer's held-out pass: metrics, and samples written under out_dir."""
        raise NotImplementedError

    def pieces(self, tok, max_pixels: int | None) -> Pieces:
        """The report's reader: what of each file is scored (with the training data's checks)."""
        raise NotImplementedError

    def report_models(self, tok, vocoder: str, inception_weights: str | None) -> tuple:
        """(vocoder, inception network) the report uses, None where this modality has no use for one."""
        return None, None

    def report_parts(self, tok, out_dir: Path, *, crop, lpips, inception, vocoder, max_vocoded):
        """(accumulator, example writer) of a report."""
        raise NotImplementedError

    def example_writer(self, tok, vocoder: str = "auto"):
        """write(out_dir, stem, {name: decoded signal}, title) -> a report example (the prior pages)."""
        raise NotImplementedError

    def report_crop(self, crop):
        """The report's `crop` setting as this modality applies it (None: not cropped)."""
        return None

    # ---- command line ----------------------------------------------------------------------
    def facts(self, tok) -> dict:
        """What `vqkit info` adds for this modality (rates, streaming, grids)."""
        return {}

    def encode_file(self, tok, src: Path, max_pixels: int | None) -> tuple:
        """(tokens as numpy, a short description) of one input file."""
        tokens = tok.encode(self.read_signal(tok, src, max_pixels)).cpu().numpy()
        return tokens, self.token_text(tok, tokens)

    def read_signal(self, tok, src: Path, max_pixels: int | None):
        """One input file as the tokenizer's signal, whole, for batches (Tokenizer.encode_batch); None
        for a file that goes alone through encode_file / writers (a long recording, read block by block)."""
        raise NotImplementedError

    def token_text(self, tok, tokens) -> str:
        """How `vqkit encode` describes one file's tokens (numpy)."""
        raise NotImplementedError

    def write_signal(self, tok, signal, dst: Path, vocoder, save_mel: bool) -> str:
        """Write one decoded signal (natural units) to dst; returns what the line names. vocoder:
        what `vocoder_of` returned."""
        raise NotImplementedError

    def vocoder_of(self, tok, vocoder: str):
        """What write_signal needs to turn a decoded signal into a file (mels: the vocoder)."""
        return None

    def writers(self, tok, refined: bool, max_pixels: int | None, vocoder: str = "auto", save_mel: bool = False,
                stages: int | None = None):
        """(decode(tokens, dst) -> text, reconstruct(src, dst) -> text), each writing one output file;
        stages=k decodes from the first k stages of a residual quantiser's tokens."""
        raise NotImplementedError

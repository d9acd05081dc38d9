"""Images: two spatial axes, (C, H, W) in [-1, 1]. Training crops are `data.image_size` squares;
the report scores centre crops (`--crop`) and, with their weights, LPIPS and rFID."""
from __future__ import annotations

import math
from pathlib import Path

from ..frontends.image import IMAGE_EXTENSIONS, find_image_files, load_image, save_image
from .base import Modality, stage_rates


class ImageModality(Modality):
    name, noun = "image", "image"
    input_suffixes, output_suffix = IMAGE_EXTENSIONS, ".png"
    units = "PSNR/SSIM on [0, 255] with data range 255; mse/l1 on [-1, 1]"
    summary_keys = ("draft_psnr", "draft_ssim", "refined_psnr", "refined_ssim", "lpips", "rfid",
                    "codebook_usage", "perplexity", "token_grid", "bits_per_image")

    # ---- data ------------------------------------------------------------------------------
    def find_files(self, folder: Path) -> list[Path]:
        return find_image_files(folder)

    def load_corpus(self, cfg, folder: str, log):
        from ..data.image_corpus import load_image_corpus

        corpus = load_image_corpus(folder, channels=cfg.model.image.channels, log=log)
        return corpus, list(corpus.images)

    def batches(self, cfg, model, items, batch_size: int):
        from ..data.image_corpus import ImageCropBatches

        return ImageCropBatches(items, cfg.data.image_size, batch_size, cfg.train.seed, cfg.data.random_flip)

    def crop_text(self, cfg) -> str:
        return f"{cfg.data.image_size}x{cfg.data.image_size} crops"

    def batch_size_key(self, cfg) -> tuple[str, int, int]:
        return "data.image_size", cfg.data.image_size, cfg.data.image_size ** 2

    # ---- models ----------------------------------------------------------------------------
    def discriminator(self, cfg):
        from ..models.image_discriminators import build_image_discriminator

        return build_image_discriminator(cfg.discriminator, cfg.model.image.channels)

    # ---- evaluation ------------------------------------------------------------------------
    def evaluate_heldout(self, cfg, model, items, out_dir: Path, metrics, step: int) -> dict:
        from ..evaluation.image_eval import evaluate_images, write_image_samples

        results, examples = evaluate_images(model, items, crop=2 * cfg.data.image_size)
        write_image_samples(out_dir, examples, metrics, step)
        return results

    def pieces(self, tok, max_pixels):
        from ..data.image_corpus import load_one_image

        def one_image(p: Path):   # an image is one piece
            item, reason, detail = load_one_image(p, tok.config.model.image.channels, 8, max_pixels)
            return (iter([("", item)]) if item is not None else None), reason, detail
        return one_image

    def report_models(self, tok, vocoder: str, inception_weights):
        if not inception_weights:
            return None, None
        from ..evaluation.fid import load_inception

        return None, load_inception(inception_weights).eval()

    def report_parts(self, tok, out_dir: Path, *, crop, lpips, inception, vocoder, max_vocoded):
        from ..evaluation.image_eval import ImageAccumulator, ImageExamples

        return ImageAccumulator(tok, crop=crop, lpips=lpips, inception=inception), ImageExamples(out_dir)

    def example_writer(self, tok, vocoder: str = "auto"):
        from ..evaluation.image_eval import write_image_example

        return write_image_example

    def report_crop(self, crop):
        return crop

    # ---- command line ----------------------------------------------------------------------
    def facts(self, tok) -> dict:
        grid = tok.token_grid(256, 256)
        by_stages = tok.bits_by_stages(math.prod(grid[:2]))   # residual quantisers: the rate of the first k
        return {"token_grid_256px": list(grid), "bits_per_256px_image": round(math.prod(grid) * tok.bits_per_token),
                **stage_rates("bits_per_256px_image_by_stages", by_stages, None)}

    def _read(self, tok, path: Path, max_pixels):
        return load_image(path, channels=tok.config.model.image.channels, max_pixels=max_pixels)

    def read_signal(self, tok, src: Path, max_pixels):
        return self._read(tok, src, max_pixels)

    def token_text(self, tok, tokens) -> str:
        return f"token grid {list(tokens.shape)}, {tokens.size * tok.bits_per_token:.0f} bits"

    def write_signal(self, tok, signal, dst: Path, vocoder, save_mel: bool) -> str:
        save_image(dst, signal.clamp(-1, 1).cpu())
        return str(dst)

    def writers(self, tok, refined: bool, max_pixels, vocoder: str = "auto", save_mel: bool = False,
                stages: int | None = None):
        def write(img, dst: Path) -> str:
            return self.write_signal(tok, img, dst, None, False)

        return (lambda t, dst: write(tok.decode(t, refined=refined, stages=stages), dst),
                lambda src, dst: write(tok.reconstruct(self._read(tok, src, max_pixels), refined, stages), dst))

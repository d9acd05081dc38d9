"""Audio as log-mel spectrograms: one time axis, mel bins as channels. Files of any length are
read block by block (models/audio_files.py); training crops are `data.segment_frames` long."""
from __future__ import annotations

from pathlib import Path

from ..frontends.audio_io import AUDIO_EXTENSIONS, find_audio_files
from .base import Modality, stage_rates

AUDIO_METRICS = ("draft_l1", "draft_mse", "refined_l1", "refined_mse", "vocoded_mr_stft", "vocoded_si_sdr",
                 "vocoded_pesq_wb", "vocoded_stoi", "draft_vocoded_pesq_wb", "draft_vocoded_stoi",
                 "draft_gv_ratio", "refined_gv_ratio", "draft_flux_ratio", "refined_flux_ratio",
                 "draft_ms_distance_db", "refined_ms_distance_db", "tokens_per_second", "bits_per_second")


class MelModality(Modality):
    name, noun = "mel", "audio"
    input_suffixes, output_suffix = AUDIO_EXTENSIONS, ".wav"
    output_keeps_name = True
    units = ("mel errors in natural-log mel units, averaged over frames and mel bins; audio metrics on "
             "vocoded original vs vocoded reconstruction")
    summary_keys = AUDIO_METRICS + ("codebook_usage", "perplexity")
    padded_crops = True   # a clip shorter than data.segment_frames is padded with silence

    # ---- data ------------------------------------------------------------------------------
    def find_files(self, folder: Path) -> list[Path]:
        return find_audio_files(folder)

    def load_corpus(self, cfg, folder: str, log):
        """Log-mel clips; with data.feature_cache, computed once, cached on disk and memory-mapped."""
        from ..frontends.mel import MelFrontend

        d = cfg.data
        if not d.feature_cache:
            from ..data.audio_corpus import load_mel_corpus

            corpus = load_mel_corpus(folder, MelFrontend(cfg.model.mel), min_seconds=d.min_seconds,
                                     max_seconds=d.max_seconds, log=log)
            return corpus, [c.mel for c in corpus.clips]
        from ..data.feature_cache import cached_mel_corpus

        corpus = cached_mel_corpus(folder, MelFrontend(cfg.model.mel), d.feature_cache, min_seconds=d.min_seconds,
                                   max_seconds=d.max_seconds, log=log, dtype=d.feature_cache_dtype)
        return corpus, corpus.mels

    def heldout_items(self, cfg, items):
        if not cfg.data.feature_cache:
            return items
        from ..data.feature_cache import AsTensors

        return AsTensors(items)   # held-out clips are evaluated whole, as tensors

    def batches(self, cfg, model, items, batch_size: int):
        from ..data.crops import MelCropBatches

        return MelCropBatches(items, cfg.data.segment_frames, batch_size, cfg.train.seed, model.frontend.silence_level)

    def crop_text(self, cfg) -> str:
        return f"{cfg.data.segment_frames} frames"

    def batch_size_key(self, cfg) -> tuple[str, int, int]:
        return "data.segment_frames", cfg.data.segment_frames, cfg.data.segment_frames

    def prepare(self, model, train_items) -> None:
        from ..data.crops import normalization_stats

        model.set_normalization(*normalization_stats(train_items))

    # ---- models ----------------------------------------------------------------------------
    def discriminator(self, cfg):
        from ..models.discriminators import MelDiscriminators

        return MelDiscriminators(cfg.model.mel.n_mels, cfg.discriminator)

    # ---- evaluation ------------------------------------------------------------------------
    def evaluate_heldout(self, cfg, model, items, out_dir: Path, metrics, step: int) -> dict:
        from ..evaluation.mel_eval import evaluate_mels, write_samples

        results, examples = evaluate_mels(model, items, max_frames=4 * cfg.data.segment_frames)
        write_samples(out_dir, examples[:2], model, metrics, step)
        return results

    def pieces(self, tok, max_pixels):
        from ..evaluation.mel_report import mel_pieces

        return lambda p: mel_pieces(tok, p)   # a long file is scored in segments

    def report_models(self, tok, vocoder: str, inception_weights):
        from ..vocoders import vocoder_for

        return vocoder_for(tok.config.model.mel, prefer=vocoder), None

    def report_parts(self, tok, out_dir: Path, *, crop, lpips, inception, vocoder, max_vocoded):
        from ..evaluation.mel_eval import MelAccumulator
        from ..evaluation.mel_report import MelExamples

        return MelAccumulator(tok), MelExamples(out_dir, tok, vocoder, max_vocoded)

    def example_writer(self, tok, vocoder: str = "auto"):
        from functools import partial

        from ..evaluation.mel_report import write_mel_example
        from ..vocoders import vocoder_for

        return partial(write_mel_example, vocoder=vocoder_for(tok.config.model.mel, prefer=vocoder))

    # ---- command line ----------------------------------------------------------------------
    def facts(self, tok) -> dict:
        from ..models.time_context import time_facts

        mel = tok.config.model.mel
        return {"mel": f"{mel.sample_rate} Hz, n_fft {mel.n_fft}, hop {mel.hop_length}, {mel.n_mels} mels, "
                       f"fmax {mel.fmax}, {mel.mel_scale}",
                "tokens_per_second": round(tok.tokens_per_second, 2), "bits_per_second": round(tok.bits_per_second, 1),
                **stage_rates("bits_per_second_by_stages", tok.bits_per_second_by_stages(), 1), **time_facts(tok)}

    def encode_file(self, tok, src: Path, max_pixels):
        from ..models.audio_files import encode_file   # read block by block: any length in bounded memory

        tokens = encode_file(tok, src).cpu().numpy()   # (T'[, channels or stages])
        return tokens, self.token_text(tok, tokens)

    def read_signal(self, tok, src: Path, max_pixels):
        """The file's whole log-mel (as the block-by-block reader computes it); None for recordings
        longer than eval's LONG_SECONDS by their header, which go alone, block by block."""
        from ..evaluation.mel_report import LONG_SECONDS, file_seconds
        from ..models.audio_files import whole_mel

        seconds = file_seconds(src)
        return None if seconds is not None and seconds > LONG_SECONDS else whole_mel(tok, src)

    def token_text(self, tok, tokens) -> str:
        return f"{tokens.size} tokens, {tokens.size / tok.tokens_per_second:.2f} s"

    def vocoder_of(self, tok, vocoder: str):
        from ..vocoders import vocoder_for

        return vocoder_for(tok.config.model.mel, prefer=vocoder)

    def write_signal(self, tok, signal, dst: Path, vocoder, save_mel: bool) -> str:
        from ..models.audio_files import write_wav

        write_wav(dst, iter([signal]), vocoder, dst.with_suffix(".mel.npy") if save_mel else None)
        return f"{dst} ({vocoder.name})"

    def writers(self, tok, refined: bool, max_pixels, vocoder: str = "auto", save_mel: bool = False,
                stages: int | None = None):
        """Audio goes through the streams (any length, bounded memory) and the vocoder, one atomic
        write per file."""
        from ..models.audio_files import decode_to_wav, reconstruct_file
        from ..vocoders import vocoder_for

        voc = vocoder_for(tok.config.model.mel, prefer=vocoder)
        mel_file = (lambda dst: dst.with_suffix(".mel.npy")) if save_mel else (lambda dst: None)

        def decode(t, dst: Path) -> str:
            decode_to_wav(tok, t, voc, dst, refined, mel_file(dst), stages)
            return f"{dst} ({voc.name})"

        def reconstruct(src: Path, dst: Path) -> str:
            reconstruct_file(tok, src, dst, voc, refined, mel_file(dst), stages)
            return f"{dst} ({voc.name})"

        return decode, reconstruct

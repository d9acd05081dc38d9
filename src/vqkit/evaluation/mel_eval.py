"""Held-out evaluation of a mel tokenizer: reconstruction error in natural log-mel units (nats) for
the draft and the refined output, codebook usage and perplexity over all held-out tokens, rates."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..quantizers.base import usage_stats
from .plots import save_spectrograms, spectrogram_figure


@torch.no_grad()
def evaluate_mels(model, mels: list[torch.Tensor], max_frames: int | None = None) -> tuple[dict, list[dict]]:
    """Run `model` (a Tokenizer, eval mode) over log-mels (n_mels, T). Returns (metrics, examples);
    each example holds numpy log-mels 'original', 'draft' and, with a refiner, 'refined'."""
    if not mels:
        raise ValueError("no held-out clips to evaluate")
    device = model.norm_mean.device
    sums: dict[str, float] = {}
    frames_total = 0
    all_tokens, examples = [], []
    for mel in mels:
        x = mel[:, :max_frames] if max_frames else mel
        n = x.shape[-1]
        xp = model.pad_to_multiple(x.unsqueeze(0).to(device).float())
        out = model(xp)
        draft = model.denormalize(out.draft)[0, :, :n]
        outputs = {"draft": draft}
        if out.refined is not None:
            outputs["refined"] = model.denormalize(out.refined)[0, :, :n]
        target = x.to(device).float()
        for name, y in outputs.items():
            sums[f"{name}_mse"] = sums.get(f"{name}_mse", 0.0) + float((y - target).pow(2).mean(0).sum())
            sums[f"{name}_l1"] = sums.get(f"{name}_l1", 0.0) + float((y - target).abs().mean(0).sum())
        frames_total += n
        all_tokens.append(out.indices[0, : math.ceil(n / model.downsample)].cpu())
        examples.append({"original": x.cpu().numpy(), **{k: v.cpu().numpy() for k, v in outputs.items()}})
    metrics = {k: v / frames_total for k, v in sums.items()}
    tokens = torch.cat(all_tokens)
    stats = usage_stats(tokens, model.codebook_size)
    metrics.update(
        codebook_usage=float(stats["usage"]), perplexity=float(stats["perplexity"]),
        codes_used=int(torch.unique(tokens).numel()), codebook_size=model.codebook_size,
        tokens_per_second=model.tokens_per_second, bits_per_second=model.bits_per_second,
        clips=len(mels), seconds=frames_total / model.config.model.mel.frames_per_second)
    return metrics, examples


def write_samples(out_dir: Path, examples: list[dict], model, metrics_log=None, step: int = 0,
                  vocoder=None) -> list[Path]:
    """PNG spectrograms (original / draft / refined) and, when a vocoder is available, WAVs of the
    original and the reconstruction; also sent to TensorBoard when `metrics_log` is given."""
    from ..frontends.audio_io import save_wav

    out_dir = Path(out_dir)
    written = []
    if vocoder is None:
        vocoder = _default_vocoder(model)
    for i, ex in enumerate(examples):
        png = save_spectrograms(out_dir / f"clip{i:02d}.png", ex, title=f"step {step}" if step else "")
        written.append(png)
        if metrics_log is not None:
            import matplotlib.pyplot as plt

            fig = spectrogram_figure(ex)
            metrics_log.image(f"reconstruction/clip{i:02d}", fig, step)
            plt.close(fig)
        if vocoder is None:
            continue
        final = "refined" if "refined" in ex else "draft"
        for name in ("original", final):
            audio = vocoder(torch.from_numpy(ex[name])).cpu().numpy()
            wav = out_dir / f"clip{i:02d}_{name}.wav"
            save_wav(wav, audio, vocoder.sample_rate)
            written.append(wav)
            if metrics_log is not None:
                metrics_log.audio(f"audio/clip{i:02d}_{name}", audio, vocoder.sample_rate, step)
    return written


def _default_vocoder(model):
    """HiFi-GAN when the mel settings match it and its weights are installed, else None (plots only)."""
    try:
        from ..vocoders import HiFiGANVocoder, vocoder_for

        v = vocoder_for(model.config.model.mel)
        return v if isinstance(v, HiFiGANVocoder) else None
    except (ImportError, FileNotFoundError):   # audio extra missing: pictures only
        return None

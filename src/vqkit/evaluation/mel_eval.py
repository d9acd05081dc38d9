"""Held-out evaluation of a mel tokenizer: reconstruction error in natural log-mel units (nats) and
oversmoothing measures (evaluation/oversmoothing.py) for the draft and the refined output, codebook
usage and perplexity over all held-out tokens, rates. Residual quantisers also get the error of the
output decoded from the first k stages (`stages_k_l1`, `stages_k_mse`, `stages_k_bits_per_second`)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..quantizers.base import usage_from_counts
from .oversmoothing import OversmoothingAccumulator
from .plots import save_spectrograms, spectrogram_figure


class MelAccumulator:
    """Adds clips (compute in batches, then add_computed one by one; or add); memory stays bounded
    (sums and a (K,) code histogram). Clips of any length: long ones go window by window."""

    def __init__(self, model, max_frames: int | None = None):
        self.model, self.max_frames = model, max_frames
        self.sums: dict[str, float] = {}
        self.smoothing: dict[str, OversmoothingAccumulator] = {}
        self.frames = 0
        self.clips = 0
        self.code_counts = torch.zeros(model.codebook_size, dtype=torch.long)

    def add(self, mel: torch.Tensor) -> dict:
        """Evaluate one log-mel (n_mels, T); returns the example (numpy log-mels) for pictures/audio."""
        return self.add_computed(self.compute([mel])[0])

    @torch.no_grad()
    def compute(self, mels: list[torch.Tensor]) -> list[dict]:
        """The model's outputs for log-mels (n_mels, T_i), in padded batches (Tokenizer.encode_batch,
        each clip's result equal to running it alone); nothing is counted until add_computed."""
        from ..models.batched import decode_batch

        model = self.model
        xs = [(m[:, : self.max_frames] if self.max_frames else m).to(model.norm_mean.device).float() for m in mels]
        tokens = model.encode_batch(xs)
        if model.refiner is not None:   # one decoder pass gives both
            pairs = decode_batch(model, tokens, with_draft=True)
            outputs = {"refined": [r for r, _ in pairs], "draft": [d for _, d in pairs]}
        else:
            outputs = {"draft": model.decode_batch(tokens, refined=False)}
        for k in range(1, model.stages or 1):   # residual quantisers: the output from the first k stages
            outputs[f"stages_{k}"] = model.decode_batch(tokens, stages=k)
        n = [x.shape[-1] for x in xs]
        return [{"x": x, "tokens": t, **{k: v[i][:, : n[i]] for k, v in outputs.items()}}
                for i, (x, t) in enumerate(zip(xs, tokens))]

    def add_computed(self, r: dict) -> dict:
        """Count one clip's computed outputs (from compute); returns its example."""
        model, x, tokens = self.model, r["x"], r["tokens"]
        n = x.shape[-1]
        outputs = {k: r[k] for k in ("draft", "refined") if k in r}
        original = x.cpu().numpy()
        for name, y in outputs.items():
            self._errors(name, x, y)
            self.smoothing.setdefault(name, OversmoothingAccumulator()).add(original, y.cpu().numpy())
        for name in (k for k in r if k.startswith("stages_")):   # errors only: the example shows every stage
            self._errors(name, x, r[name])
        self.frames += n
        self.clips += 1
        self.code_counts += torch.bincount(tokens[: math.ceil(n / model.downsample)].reshape(-1).cpu(),
                                           minlength=model.codebook_size)
        return {"original": original, **{k: v.cpu().numpy() for k, v in outputs.items()}}

    def _errors(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        self.sums[f"{name}_mse"] = self.sums.get(f"{name}_mse", 0.0) + float((y - x).pow(2).mean(0).sum())
        self.sums[f"{name}_l1"] = self.sums.get(f"{name}_l1", 0.0) + float((y - x).abs().mean(0).sum())

    def result(self) -> dict:
        if not self.clips:
            raise ValueError("no held-out clips to evaluate")
        model = self.model
        metrics = {k: v / self.frames for k, v in self.sums.items()}
        for name, acc in self.smoothing.items():
            metrics.update({f"{name}_{k}": v for k, v in acc.result().items()})
        metrics.update(usage_from_counts(self.code_counts))
        metrics.update(tokens_per_second=model.tokens_per_second, bits_per_second=model.bits_per_second,
                       clips=self.clips, seconds=self.frames / model.config.model.mel.frames_per_second)
        for k, bits in (model.bits_per_second_by_stages() or {}).items():
            metrics[f"stages_{k}_bits_per_second"] = bits   # the last k is the whole output (refined_*)
        return metrics


def evaluate_mels(model, mels: list[torch.Tensor], max_frames: int | None = None) -> tuple[dict, list[dict]]:
    """Run `model` (a Tokenizer, eval mode) over log-mels (n_mels, T). Returns (metrics, examples);
    each example holds numpy log-mels 'original', 'draft' and, with a refiner, 'refined'."""
    acc = MelAccumulator(model, max_frames)
    examples = [acc.add_computed(r) for r in acc.compute(list(mels))]
    return acc.result(), examples


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

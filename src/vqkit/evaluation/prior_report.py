"""Pages for token priors: samples decoded to pictures / audio, and SeQ-GAN's teacher-forced
visualisation (ground-truth tokens through the AR prior in one causal pass, the top-1 prediction at
every position decoded beside the tokenizer's reconstruction, with top-1 accuracy and NLL)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..io.files import atomic_write
from .html_report import render_report


class TokenDecoder:
    """Tokens in the tokenizer's layout -> files on disk. `write(out_dir, stem, signals, title)` is
    the modality's example writer (modalities: PNG for images; mel PNG + WAV for audio)."""

    def __init__(self, tok, write):
        self.tok, self.write = tok, write

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(*grid[, c]) -> image (C, H, W) in [-1, 1] or log-mel (n_mels, T)."""
        return self.tok.decode(tokens.long().cpu()).float()


def write_samples(prior, tok, out_dir: Path, n: int, batch_size: int = 16, labels: list[int] | None = None,
                  *, write, seed: int = 0, log=print, **sampling) -> dict:
    """Sample n token grids, save each as tokens (.npy + sidecar) and decoded, plus index.html."""
    from ..tokens_io import save_tokens

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(prior.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    dec = TokenDecoder(tok, write)
    examples, passes, t0 = [], 0, time.perf_counter()
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        lab = torch.tensor(labels[start:start + b]) if labels is not None else None
        tokens = prior.generate(b, labels=lab, generator=g, **sampling).cpu()
        passes += prior.forward_passes
        for i in range(b):
            k = start + i
            save_tokens(out_dir / f"sample_{k:03d}.npy", tokens[i].numpy(), tok, extra={"prior_sample": k})
            title = f"sample {k}" + (f" (class {prior.class_names[labels[k]]})" if labels is not None else "")
            examples.append(dec.write(out_dir, f"sample_{k:03d}", {"sample": dec.decode(tokens[i])}, title))
    seconds = time.perf_counter() - t0
    record = {"title": f"vqkit prior samples: {prior.cfg.name} ({prior.kind})", "tokenizer_id": tok.tokenizer_id,
              "metrics": {"samples": n, "forward_passes_per_batch": passes / math.ceil(n / batch_size),
                          "seconds_per_sample": seconds / n, "positions": prior.positions,
                          "grid": "x".join(map(str, prior.grid)), "channels": prior.channels},
              "settings": {"seed": seed, "batch_size": batch_size, "modality": tok.modality,
                           **{k: v for k, v in sampling.items() if v is not None}}}
    atomic_write(out_dir / "samples.json", json.dumps(record, indent=1))
    render_report(out_dir, record, examples)
    log(f"{n} samples -> {out_dir} ({seconds / n:.3f} s per sample, {record['metrics']['forward_passes_per_batch']:.0f} "
        f"forward passes per batch)")
    return record


@torch.no_grad()
def visualize_prior(prior, tok, corpus, out_dir: Path, n_examples: int = 6, max_windows: int = 256,
                    *, write, log=print) -> dict:
    """Teacher-forced top-1 predictions of an AR prior on `corpus` (a TokenCorpus of held-out tokens):
    NLL and top-1 accuracy over up to `max_windows` windows; the first n_examples decoded."""
    from ..priors.prior import as_sequences

    if prior.kind != "gpt":
        raise ValueError(f"visualize-prior needs an autoregressive (gpt) prior; this one is {prior.kind} "
                         "(its predictions are not one causal pass)")
    windows = as_sequences(corpus.arrays, prior.grid)[:max_windows]
    if not windows:
        raise ValueError(f"{corpus.root}: no token file holds a full {'x'.join(map(str, prior.grid))} window")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(prior.parameters()).device
    dec = TokenDecoder(tok, write)
    nll_sum, correct, count, examples = 0.0, 0, 0, []
    for i, (f, w) in enumerate(windows):
        seq = torch.from_numpy(w.astype(np.int64))[None].to(device)      # (1, L, c)
        label = torch.tensor([corpus.labels[f]], device=device) if prior.class_names else None
        logits = prior.net(seq, label).float()                            # one causal pass
        nll_sum += float(F.cross_entropy(logits.flatten(0, -2), seq.flatten(), reduction="sum"))
        top1 = logits.argmax(-1)
        correct += int((top1 == seq).sum())
        count += seq.numel()
        if i < n_examples:
            truth, pred = prior.unflatten(seq)[0].cpu(), prior.unflatten(top1)[0].cpu()
            examples.append(dec.write(out_dir, f"window{i:02d}", {
                "tokenizer reconstruction": dec.decode(truth), "prior top-1": dec.decode(pred)},
                f"window {i}: top-1 accuracy {float((top1 == seq).float().mean()):.3f}"))
    metrics = {"nll": nll_sum / count, "top1_accuracy": correct / count, "perplexity": math.exp(nll_sum / count),
               "uniform_nll": math.log(prior.codebook_size), "windows": len(windows), "tokens": count}
    record = {"title": f"vqkit prior visualisation: {prior.cfg.name}", "tokenizer_id": tok.tokenizer_id,
              "metrics": metrics, "units": "NLL in nats per token; top-1: the prior's most likely token given the "
                                           "true past (teacher forcing), decoded beside the tokenizer's reconstruction",
              "data": {"root": str(corpus.root), "files": len(corpus)},
              "settings": {"modality": tok.modality, "grid": list(prior.grid)}}
    atomic_write(out_dir / "metrics.json", json.dumps(record, indent=1))
    render_report(out_dir, record, examples)
    log(f"validation NLL {metrics['nll']:.3f} nats (uniform {metrics['uniform_nll']:.3f}), top-1 accuracy "
        f"{metrics['top1_accuracy']:.3f} over {count} tokens -> {out_dir}")
    return record

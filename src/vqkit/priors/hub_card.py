"""A token prior's model card for the Hugging Face Hub (README.md): the network, what it models (the
tokenizer by id, the token grid, classes), its last held-out NLL where its run logged one, and how to
load and sample it. io/hub.py renders, stages and uploads it, as for tokenizers."""
from __future__ import annotations

import math
from pathlib import Path

from ..io.hub import push, render_card, stage, table, training_data_text
from ..io.run_records import checkpoint_of, checkpoint_step, last_record, run_dir, training_data


def prior_card(prior, repo_id: str, source: str | Path | None = None, license: str | None = None,
               data: str | None = None, tokenizer: str | None = None) -> str:
    """README.md for `prior` as `repo_id`; `source`: the checkpoint or run folder it came from (its
    metrics.jsonl gives steps and held-out numbers); `tokenizer`: where its tokenizer is (a hub repo
    id or a path), named in the card; `license`, `data` as for tokenizer cards."""
    m = prior.cfg.model
    meta_ = prior.meta
    ckpt = checkpoint_of(source) if source is not None else None
    run = run_dir(ckpt) if ckpt is not None else None
    step = checkpoint_step(ckpt) if ckpt is not None else None
    held = last_record(run, "heldout", step) if run is not None else None
    n = sum(p.numel() for p in prior.parameters())
    model = table([
        ("kind", f"{m.kind} ({'autoregressive, one pass per position' if m.kind == 'gpt' else 'masked, parallel'})"),
        ("transformer", f"dim {m.dim}, depth {m.depth}, heads {m.heads}"),
        ("parameters", f"{n / 1e6:.3g}M" if n >= 1e5 else f"{n:,}"),
        ("models tokens of", f"tokenizer `{meta_['tokenizer_id']}`" + (f" ({tokenizer})" if tokenizer else "")),
        ("modality", meta_["modality"]),
        ("codebook size", prior.codebook_size),
        ("token grid", f"{list(prior.grid)}, {prior.channels} per position ({prior.positions} positions, "
                       f"{prior.positions * prior.channels * math.log2(prior.codebook_size):.0f} bits)"),
        ("classes", ", ".join(prior.class_names) if prior.class_names else "none (unconditional)"),
        ("trained steps", step),
    ])
    metrics = ""
    if held:
        rows = [(k, f"{v:.4g}" if isinstance(v, float) else v) for k, v in held.items()
                if k not in ("step", "split", "time") and isinstance(v, (int, float))]
        metrics = (f"Held-out tokens at step {held['step']} (nll in nats per token, acc: top-1 accuracy):\n\n"
                   + table(rows, ("metric", "value")))
    tok = tokenizer or "TOKENIZER"
    use = (f"```python\nfrom vqkit.priors.prior import TokenPrior\nfrom vqkit import Tokenizer\n\n"
           f"prior = TokenPrior.from_pretrained(\"{repo_id}\")\ntok = Tokenizer.from_pretrained(\"{tok}\")"
           f"   # its tokenizer_id must be {meta_['tokenizer_id']}\n"
           f"tokens = prior.generate(4)\nsignals = tok.decode(tokens)\n```\n\n"
           f"Or: `vqkit sample {repo_id} --tokenizer {tok} -n 16 -o OUT`.")
    tags = ["token-prior", m.kind, "audio" if meta_["modality"] == "mel" else "image"]
    training = training_data_text(training_data(ckpt, step) if ckpt is not None else None, data,
                                  "Not recorded with this checkpoint.")
    return render_card(repo_id, f"A vqkit {m.kind} prior over the tokens of a {meta_['modality']} tokenizer.",
                       [("Model", model), ("Training data", training), ("Held-out metrics", metrics), ("Use", use)],
                       license, tags)


def stage_prior(prior, directory: str | Path, repo_id: str, **card) -> Path:
    """Write what push_to_hub uploads (config.yaml, model.safetensors, prior.json, README.md) into `directory`."""
    return stage(directory, prior.save_pretrained, prior_card(prior, repo_id, **card))


def push_prior(prior, repo_id: str, source=None, license=None, data=None, tokenizer=None, **upload):
    return push(prior.save_pretrained, prior_card(prior, repo_id, source, license, data, tokenizer), repo_id, **upload)

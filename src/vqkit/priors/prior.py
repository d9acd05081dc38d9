"""A trained token prior as one object: the network (GPT or MaskGIT), its config, and what it models
(which tokenizer, the token grid, classes). Checkpoint directory, like a tokenizer's:

    config.yaml        the PriorConfig
    model.safetensors  the weights
    prior.json         tokenizer id and path, modality, codebook size, channels, grid, class names

Tokens come and go in the tokenizer's layout ((T[, c]) for mel, (H, W[, c]) for images, channels last
only when there are several); the network sees flattened (L, c) raster-order sequences.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, from_dict, save_config
from ..config.io import prune_kinds, read_yaml
from ..config.prior_schema import PriorConfig
from ..io.files import atomic_write, read_limited
from ..io.weights import (CONFIG_NAME, WEIGHTS_NAME, load_matching, read_weights, resolve_checkpoint_dir,
                          save_weights, weight_shapes)
from ..nn.transformer import swiglu_hidden
from . import build_prior

META_NAME = "prior.json"
META_KEYS = ("tokenizer_id", "tokenizer_path", "modality", "codebook_size", "channels", "grid", "class_names")


class TokenPrior(nn.Module):
    def __init__(self, cfg: PriorConfig, meta: dict):
        super().__init__()
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise ValueError(f"prior metadata lacks {missing}")
        self.cfg, self.meta = cfg, dict(meta)
        self.grid = tuple(int(g) for g in meta["grid"])
        self.channels = int(meta["channels"])
        self.codebook_size = int(meta["codebook_size"])
        self.class_names = list(meta["class_names"])
        if cfg.model.num_classes and cfg.model.num_classes != len(self.class_names):
            raise ConfigError(f"model.num_classes={cfg.model.num_classes}, but the tokens have "
                              f"{len(self.class_names)} class folders")
        self.net = build_prior(cfg.model, self.codebook_size, self.channels, max_len=math.prod(self.grid))

    @property
    def kind(self) -> str:
        return self.cfg.model.kind

    @property
    def positions(self) -> int:
        return math.prod(self.grid)

    # ---- layouts ---------------------------------------------------------------------------
    def flatten(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, *grid[, c]) in the tokenizer's layout -> (B, L, c)."""
        return tokens.reshape(tokens.shape[0], self.positions, self.channels)

    def unflatten(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L, c) -> (B, *grid[, c]) in the tokenizer's layout."""
        out = seq.reshape(seq.shape[0], *self.grid, self.channels)
        return out.squeeze(-1) if self.channels == 1 else out

    # ---- training and sampling ---------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss, as forward: what DDP and torch.compile wrap."""
        return self.loss(tokens, labels, generator)

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """tokens (B, L, c). MaskGIT draws its masks from `generator` (held-out evaluation fixes it)."""
        labels = labels if labels is not None and labels.numel() else None
        if self.kind == "maskgit":
            return self.net.loss(tokens, labels, generator=generator)
        return self.net.loss(tokens, labels)

    @torch.no_grad()
    def generate(self, n: int, labels: torch.Tensor | None = None, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, steps: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples in the tokenizer's layout. Unset sampling options take the config's `sample` values;
        `steps` is MaskGIT's number of decoding passes (GPT always takes one per position)."""
        s = self.cfg.sample
        opts = dict(temperature=s.temperature if temperature is None else temperature,
                    top_k=s.top_k if top_k is None else top_k, top_p=s.top_p if top_p is None else top_p,
                    generator=generator)
        if labels is not None:
            if not self.class_names:
                raise ValueError("this prior is unconditional: it takes no class labels")
            labels = labels.to(self.net.head.weight.device)
        if self.kind == "maskgit":
            seq = self.net.generate(n, self.positions, labels, steps=steps, **opts)
        else:
            if steps is not None:
                raise ValueError("steps applies to MaskGIT priors; a GPT prior takes one pass per position")
            seq = self.net.generate(n, self.positions, labels, **opts)
        return self.unflatten(seq)

    @property
    def forward_passes(self) -> int:
        return self.net.forward_passes

    # ---- files ---------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, d / CONFIG_NAME)
        save_weights(self, d / WEIGHTS_NAME, "vqkit-prior-v1")
        atomic_write(d / META_NAME, json.dumps(self.meta, indent=1))
        return d

    def push_to_hub(self, repo_id: str, *, license: str | None = None, data: str | None = None,
                    tokenizer: str | None = None, source: str | Path | None = None, token: str | bool | None = None,
                    private: bool | None = None, revision: str | None = None, commit_message: str | None = None,
                    api=None):
        """Upload config.yaml + model.safetensors + prior.json + a model card to the Hugging Face Hub
        repo `repo_id` (see Tokenizer.push_to_hub; `tokenizer`: its tokenizer's repo id, for the card)."""
        from .hub_card import push_prior

        return push_prior(self, repo_id, source if source is not None else getattr(self, "_loaded_from", None),
                          license, data, tokenizer, token=token, private=private, revision=revision,
                          commit_message=commit_message, api=api)

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str = "cpu", *, revision: str | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False,
                        token: str | bool | None = None) -> "TokenPrior":
        """A prior checkpoint or run directory, or a Hugging Face Hub repo `namespace/name` (io/hub.py)."""
        d = resolve_checkpoint_dir(path, revision, (CONFIG_NAME, WEIGHTS_NAME, META_NAME), cache_dir=cache_dir,
                                   local_files_only=local_files_only, token=token)
        if not (d / META_NAME).is_file():
            raise ValueError(f"{d}: not a token prior checkpoint (no {META_NAME}; a tokenizer checkpoint?)")
        raw = read_yaml(d / CONFIG_NAME, what="checkpoint config")   # names the file and the problem
        try:
            meta = json.loads(read_limited(d / META_NAME, 2**20, "prior metadata file"))
            cfg = from_dict(PriorConfig, prune_kinds(PriorConfig, raw)).validate()   # saved flat: other kinds' keys go
        except ValueError as e:
            raise ValueError(f"{d}: unreadable prior checkpoint ({e})") from None
        prior = cls(keep_saved_width(cfg, d / WEIGHTS_NAME), meta)
        load_matching(prior, read_weights(d / WEIGHTS_NAME, map_location), str(d / WEIGHTS_NAME))
        prior._loaded_from = d   # push_to_hub's model card reads the run's records there
        return prior.eval()


def keep_saved_width(cfg: PriorConfig, weights: Path) -> PriorConfig:
    """A saved config without model.mlp_hidden means the default width of the code that saved it:
    before the one nn.transformer rule, priors rounded it to a multiple of 64 from dim 256 on (704,
    not 688, at dim 256). The weights say which width it was; the config then names it."""
    if cfg.model.mlp_hidden is None:
        shape = weight_shapes(weights).get("net.transformer.blocks.0.mlp.down.weight")
        if shape is not None and shape[-1] != swiglu_hidden(cfg.model.dim):
            cfg.model.mlp_hidden = shape[-1]
    return cfg


def tokens_meta(corpus, grid: tuple[int, ...], tokenizer_path: str | None) -> dict:
    """prior.json content for a prior trained on `corpus` (a TokenCorpus)."""
    return {"tokenizer_id": corpus.tokenizer_id, "tokenizer_path": str(tokenizer_path) if tokenizer_path else None,
            "tokenizer_name": corpus.meta.get("tokenizer_name"), "modality": corpus.modality,
            "codebook_size": corpus.codebook_size, "channels": corpus.channels, "grid": list(grid),
            "class_names": list(corpus.class_names)}


def as_sequences(arrays: list[np.ndarray], grid: tuple[int, ...]) -> list[tuple[int, np.ndarray]]:
    """Whole token files cut into the prior's window: mel sequences into consecutive windows of
    `grid[0]` positions (the remainder dropped), image grids cropped at the top-left to `grid`
    (files smaller than the window are left out). -> [(file index, (L, c) window)]."""
    out = []
    for f, a in enumerate(arrays):   # (T, c) or (H, W, c)
        if len(grid) == 1:
            out += [(f, np.asarray(a[i * grid[0]:(i + 1) * grid[0]])) for i in range(a.shape[0] // grid[0])]
        elif a.shape[0] >= grid[0] and a.shape[1] >= grid[1]:
            out.append((f, np.asarray(a[: grid[0], : grid[1]]).reshape(-1, a.shape[-1])))
    return out

"""Spectrogram figures (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def spectrogram_figure(panels: dict[str, np.ndarray], title: str = ""):
    """One row per named log-mel (n_mels, T), shared colour scale."""
    arrays = [np.asarray(a, dtype=np.float32) for a in panels.values()]
    vmin = min(float(a.min()) for a in arrays)
    vmax = max(float(a.max()) for a in arrays)
    width = min(14.0, 3.0 + arrays[0].shape[-1] / 40)
    fig, axes = plt.subplots(len(arrays), 1, figsize=(width, 1.8 * len(arrays)), squeeze=False)
    for ax, (name, a) in zip(axes[:, 0], zip(panels, arrays)):
        im = ax.imshow(a, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma",
                       interpolation="nearest")
        ax.set_ylabel(name)
        ax.set_xticks([])
    fig.colorbar(im, ax=axes[:, 0].tolist(), fraction=0.02, pad=0.01, label="log-mel")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def save_spectrograms(path: Path, panels: dict[str, np.ndarray], title: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = spectrogram_figure(panels, title)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

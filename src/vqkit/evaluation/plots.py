"""Figures (matplotlib, headless): spectrograms, and the one way every figure is made and saved.

Titles and labels carry user text (file names, metric names from a log): matplotlib would parse
`$...$` in them as mathtext and fail on a name like `math $\\frac$ x.wav`, so every figure is built
with math parsing off, and saved through the one atomic write.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io.files import atomic_write  # noqa: E402


def plain_text():
    """Context in which figures are built: text is text, never mathtext (read when a Text is made)."""
    return plt.rc_context({"text.parse_math": False, "text.usetex": False})


def save_figure(fig, path: Path) -> Path:
    """Write `fig` as a PNG at `path` (atomically) and close it, also when saving fails."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)
    return Path(path)


def spectrogram_figure(panels: dict[str, np.ndarray], title: str = ""):
    """One row per named log-mel (n_mels, T), shared colour scale."""
    arrays = [np.asarray(a, dtype=np.float32) for a in panels.values()]
    vmin = min(float(a.min()) for a in arrays)
    vmax = max(float(a.max()) for a in arrays)
    width = min(14.0, 3.0 + arrays[0].shape[-1] / 40)
    with plain_text():
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
    return save_figure(spectrogram_figure(panels, title), path)

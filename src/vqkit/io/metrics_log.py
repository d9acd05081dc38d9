"""Run logging: one JSON line per record in metrics.jsonl, the same numbers in TensorBoard."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .files import atomic_write


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool = True, resume_step: int | None = None):
        """resume_step: a run resumed from the checkpoint of this step forgets what it logged after
        it (those steps are trained again), in metrics.jsonl and in TensorBoard."""
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            if resume_step is not None and self.path.exists():
                self._truncate_after(resume_step)
            self._tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step or None)

    def _truncate_after(self, step: int) -> None:
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):   # a line cut short by a crash
                continue
        text = "".join(line + "\n" for line in kept)
        atomic_write(self.path, text)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
        record = {"step": step, "split": split, "time": round(time.time(), 3),
                  **{k: (round(scalars[k], 6) if k in scalars else v) for k, v in values.items()}}
        with open(self.path, "a") as f:   # flushed per record: others may follow the file
            f.write(json.dumps(record) + "\n")
        for k, v in scalars.items():   # e.g. a token grid shape is recorded, not plotted
            self._tb.add_scalar(f"{split}/{k}", v, step)

    def image(self, tag: str, figure, step: int) -> None:
        if self._tb is not None:
            self._tb.add_figure(tag, figure, step, close=False)

    def image_array(self, tag: str, array_hwc: np.ndarray, step: int) -> None:
        if self._tb is not None:
            self._tb.add_image(tag, array_hwc, step, dataformats="HWC")

    def audio(self, tag: str, audio: np.ndarray, sample_rate: int, step: int) -> None:
        if self._tb is not None:
            self._tb.add_audio(tag, np.clip(audio, -1, 1)[None], step, sample_rate=sample_rate)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

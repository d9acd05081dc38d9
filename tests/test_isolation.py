"""An isolated refiner cannot reach the base model's update: not through its losses (tested in
test_model.py), and not through gradient clipping or skipped non-finite steps either, since the
base model and the refiner are clipped and skipped as separate parameter groups."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY
from vqkit.config import load_config
from vqkit.training.trainer import Trainer

quiet = lambda m: None  # noqa: E731
pytestmark = pytest.mark.usefixtures("single_thread")
# cpu: bitwise comparisons need deterministic kernels (CUDA's convolution backward is not)
COMMON = ["train.steps=4", "train.log_every=1", "train.eval_every=100", "train.save_every=100",
          "loss.gan_start_step=0", "optim.grad_clip=1.0", "train.device=cpu"]


def trained(run_dir, mels, *extra, hook=None) -> Trainer:
    t = Trainer(load_config("mqgan-refiner", overrides=TINY + COMMON + list(extra)), run_dir, mels, log=quiet,
                progress=False)
    if hook is not None:
        hook(t)
    t.fit()
    return t


def split_state(t: Trainer) -> tuple[dict, dict]:
    """(base model, refiner) weights and buffers."""
    state = {k: v.clone() for k, v in t.raw_model.state_dict().items()}
    return ({k: v for k, v in state.items() if not k.startswith("refiner.")},
            {k: v for k, v in state.items() if k.startswith("refiner.")})


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train_records(run_dir) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]


@pytest.mark.parametrize("mode", ["isolated", "shared"])
def test_gan_weight_reaches_the_base_model_only_in_shared_mode(tmp_path, synthetic_mels, mode):
    runs = {gan: trained(tmp_path / f"gan{gan}", synthetic_mels, f"model.refiner.mode={mode}", f"loss.gan={gan}")
            for gan in (0, 1000)}
    (base0, ref0), (base1, ref1) = split_state(runs[0]), split_state(runs[1000])
    loud = train_records(tmp_path / "gan1000")
    assert all("g_adv" in r for r in loud)    # the GAN ran from step 0 ...
    assert not equal(ref0, ref1)              # ... and trained the refiner differently
    if mode == "isolated":
        # ... with refiner gradients far above the clip, which a shared clip would have applied to all
        assert min(r["grad_norm_refiner"] for r in loud) > 10 * runs[1000].cfg.optim.grad_clip
        assert equal(base0, base1)            # bitwise: the base model never felt it
        quiet_log = train_records(tmp_path / "gan0")
        assert [r["grad_norm"] for r in loud] == [r["grad_norm"] for r in quiet_log]
    else:
        assert not equal(base0, base1)
        assert "grad_norm_refiner" not in loud[0]   # one group: the generator


def poison_refiner_gradient(t: Trainer) -> None:
    weight = next(t.raw_model.refiner.parameters())
    weight.register_hook(lambda g: g * float("nan"))


@pytest.mark.parametrize("mode", ["isolated", "shared"])
def test_a_non_finite_refiner_gradient_skips_only_the_refiner_when_isolated(tmp_path, synthetic_mels, mode):
    extra = [f"model.refiner.mode={mode}", "loss.gan=0"]
    clean = trained(tmp_path / "clean", synthetic_mels, *extra)
    start = Trainer(load_config("mqgan-refiner", overrides=TINY + COMMON + extra), tmp_path / "init", synthetic_mels,
                    log=quiet, progress=False)
    poisoned = trained(tmp_path / "poisoned", synthetic_mels, *extra, hook=poison_refiner_gradient)
    (base_init, ref_init), (base_clean, _), (base_bad, ref_bad) = map(split_state, (start, clean, poisoned))
    assert poisoned.step == 4 and poisoned.skipped_steps == 4   # every step skipped an update ...
    assert equal(ref_bad, ref_init)                            # ... the refiner's, never applied
    if mode == "isolated":
        assert poisoned.skipped_groups == ["refiner"]
        assert equal(base_bad, base_clean)                     # the base model trained as without it
        assert not equal(base_bad, base_init)
    else:   # one objective, one group: the whole generator waits for a finite gradient
        assert poisoned.skipped_groups == ["generator"]
        assert equal(base_bad, base_init)

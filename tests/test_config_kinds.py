"""Per-kind configs: a component's block holds exactly its kind's keys (a tagged union keyed by
`kind`), so a key of another kind is refused naming it, on every preset, instead of being accepted
and ignored; configs saved before (one block with every kind's keys) still load with their meaning."""
from __future__ import annotations

import dataclasses
import re
import typing

import pytest
import yaml

from vqkit.config import (Config, ConfigError, VQConfig, available_presets, config_from_dict, load_config,
                          tagged_kinds)
from vqkit.models.tokenizer import Tokenizer


def tagged_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, dict[str, type]]]:
    """(dotted key, {kind: dataclass}) of every tagged union in the schema."""
    found = []
    for name, tp in typing.get_type_hints(cls).items():
        kinds = tagged_kinds(tp)
        if kinds is not None:
            found.append((prefix + name, kinds))
        elif dataclasses.is_dataclass(tp):
            found += tagged_fields(tp, f"{prefix}{name}.")
    return found


def value_at(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def foreign_keys(kinds: dict[str, type], kind: str) -> list[tuple[str, object]]:
    """(key, a valid value of it) for every key that another kind has and `kind` has not."""
    own = {f.name for f in dataclasses.fields(kinds[kind])}
    out = {}
    for other, cls in kinds.items():
        for f in dataclasses.fields(cls):
            if f.name not in own and f.name not in out:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                out[f.name] = default
    return sorted(out.items())


def test_the_schema_has_tagged_unions():
    keys = {k: sorted(kinds) for k, kinds in tagged_fields()}
    assert keys == {"model.backbone": ["convnext", "resnet1d", "resnet2d", "vit"],
                    "model.quantizer": ["fsq", "vq"], "discriminator": ["mel", "patchgan", "stylegan"]}


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_refuses_every_key_of_another_kind(preset):
    cfg = load_config(preset=preset)
    for dotted, kinds in tagged_fields():
        kind = value_at(cfg, dotted).kind
        for key, value in foreign_keys(kinds, kind):
            override = f"{dotted}.{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            with pytest.raises(ConfigError, match=rf"{dotted}\.{key}: applies to kind .*not '{kind}'"):
                load_config(preset=preset, overrides=[override])


def test_an_unknown_kind_names_the_kinds():
    with pytest.raises(ConfigError, match=r"model.quantizer.kind: unknown kind 'lfq'; available: fsq, vq"):
        load_config(preset="mqgan-refiner", overrides=["model.quantizer.kind=lfq"])


def test_switching_kind_replaces_the_block():
    """model.quantizer.kind=vq on an FSQ preset starts from VQ's defaults (the preset's levels belong
    to FSQ); keys given with it apply to the new kind."""
    cfg = load_config(preset="mqgan-refiner", overrides=["model.quantizer.kind=vq", "model.quantizer.codebook_size=512"])
    assert cfg.model.quantizer == VQConfig(codebook_size=512)
    assert Tokenizer(cfg).codebook_size == 512
    same = load_config(preset="mqgan-refiner", overrides=["model.quantizer.kind=fsq"])   # same kind: merged
    assert same.model.quantizer.levels == [8, 5, 5, 5]


def test_a_config_saved_with_every_kinds_keys_loads_with_its_meaning(tmp_path):
    """The flat layout configs were saved in before: an fsq block with vq's keys at their
    defaults (they were unused) loads as the same fsq model; a typo is still refused."""
    flat = load_config(preset="mqgan-refiner").to_dict()
    flat["model"]["quantizer"].update(codebook_size=1024, dim=64, codebook_dim=None, l2_norm=False, beta=0.25,
                                      entropy_weight=0.0, entropy_temperature=0.01, channels=1,
                                      restart_dead_codes=False, dead_code_threshold=0.1, usage_decay=0.99,
                                      distance_chunk=4096)
    cfg = config_from_dict(flat, "saved config.yaml", saved=True)
    assert cfg.model.quantizer == load_config(preset="mqgan-refiner").model.quantizer
    assert Tokenizer(cfg).codebook_size == 1000
    with pytest.raises(ConfigError, match="model.quantizer.codebook_size: applies to kind 'vq'"):
        config_from_dict(flat, "a user's file")   # not saved by vqkit: strict
    flat["model"]["quantizer"]["levles"] = [8, 8]
    with pytest.raises(ConfigError, match=r"model.quantizer.levles: unknown key \(did you mean model.quantizer.levels"):
        config_from_dict(flat, "saved config.yaml", saved=True)


def test_a_saved_config_round_trips_with_only_its_kinds_keys(tmp_path):
    from vqkit.config import save_config

    cfg = load_config(preset="mqgan-refiner")
    save_config(cfg, tmp_path / "config.yaml")
    block = yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]["quantizer"]
    assert block == {"kind": "fsq", "levels": [8, 5, 5, 5]}
    assert load_config(path=tmp_path / "config.yaml", saved=True) == cfg


@pytest.mark.parametrize("override, key, kind", [
    ("model.backbone.heads=2", "model.backbone.heads", "resnet1d"),            # resnet1d has no attention heads
    ("model.backbone.kernel_size=3", "model.backbone.kernel_size", "resnet2d"),
    ("model.backbone.attention=false", "model.backbone.attention", "vit"),     # a ViT is attention
    ("discriminator.bands=2", "discriminator.bands", "patchgan"),
])
def test_the_keys_named_in_the_issue_are_refused(override, key, kind):
    preset = {"resnet1d": "mqgan-refiner", "resnet2d": "vqgan", "vit": "vit-vq", "patchgan": "vqgan"}[kind]
    with pytest.raises(ConfigError, match=rf"override '{re.escape(override)}': {re.escape(key)}: applies to kind .*not '{kind}'"):
        load_config(preset=preset, overrides=[override])


def test_band_channels_without_bands_are_refused():
    with pytest.raises(ConfigError, match=r"discriminator.band_channels: \[8, 16\] has no effect with bands 0"):
        load_config(preset="mqgan-refiner", overrides=["discriminator.bands=0"])
    cfg = load_config(preset="mqgan-refiner", overrides=["discriminator.bands=0", "discriminator.band_channels=[]"])
    assert cfg.discriminator.bands == 0
    saved = load_config(preset="mqgan-refiner").to_dict()   # saved before: bands 0 with unused widths
    saved["discriminator"].update(bands=0, band_channels=[8, 16])
    assert config_from_dict(saved, "saved config.yaml", saved=True).discriminator.band_channels == []


@pytest.mark.parametrize("preset", available_presets("prior"))
def test_every_prior_preset_refuses_every_key_of_another_kind(preset):
    from vqkit.config.prior_schema import PriorConfig

    assert {k: sorted(v) for k, v in tagged_fields(PriorConfig)} == {"model": ["gpt", "maskgit"]}
    kind = load_config(preset=preset, schema=PriorConfig).model.kind
    for key, value in foreign_keys(tagged_fields(PriorConfig)[0][1], kind):
        with pytest.raises(ConfigError, match=rf"model\.{key}: applies to kind .*not '{kind}'"):
            load_config(preset=preset, schema=PriorConfig, overrides=[f"model.{key}={value}"])


def test_a_prior_config_saved_flat_loads(tmp_path):
    """Prior checkpoints saved before the split hold maskgit_* keys in a GPT's block."""
    from vqkit.config import save_config
    from vqkit.config.prior_schema import PriorConfig

    flat = load_config(preset="prior-gpt", schema=PriorConfig).to_dict()
    flat["model"].update(maskgit_steps=8, maskgit_temperature=4.5)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(flat))
    cfg = load_config(path=tmp_path / "config.yaml", schema=PriorConfig, saved=True)
    assert cfg == load_config(preset="prior-gpt", schema=PriorConfig)
    with pytest.raises(ConfigError, match="model.maskgit_steps: applies to kind 'maskgit'"):
        load_config(path=tmp_path / "config.yaml", schema=PriorConfig)
    save_config(cfg, tmp_path / "again.yaml")
    assert "maskgit_steps" not in (tmp_path / "again.yaml").read_text()

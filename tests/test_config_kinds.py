"""Per-kind configs: a component's block holds exactly its kind's keys (a tagged union keyed by
`kind`; the model, data and loss blocks by the model's `modality`), so a key of another kind is
refused naming it, on every preset, instead of being accepted and ignored; configs saved before
(one block with every kind's keys) still load with their meaning."""
from __future__ import annotations

import dataclasses
import re
import typing

import pytest
import yaml

from vqkit.config import (ConfigError, QuantizerConfig, VQConfig, available_presets, config_from_dict, load_config,
                          tagged_kinds)
from vqkit.config.tagged import tag_name
from vqkit.models.tokenizer import Tokenizer
from vqkit.quantizers import REGISTRY


def tagged_fields(cfg, prefix: str = "") -> list[tuple[str, dict[str, type], str]]:
    """(dotted key, {kind: dataclass}, the kind cfg chose) of every tagged union in a config,
    walking into the blocks it chose (the backbone union inside the model's modality)."""
    found = []
    for name, tp in typing.get_type_hints(type(cfg)).items():
        value, kinds = getattr(cfg, name), tagged_kinds(tp)
        if kinds is not None:
            found.append((prefix + name, kinds, getattr(value, tag_name(type(value)))))
        if dataclasses.is_dataclass(value):
            found += tagged_fields(value, f"{prefix}{name}.")
    return found


def foreign_keys(kinds: dict[str, type], kind: str) -> list[tuple[str, object]]:
    """(key, a valid value of it) for every key that another kind has and `kind` has not."""
    own = {f.name for f in dataclasses.fields(kinds[kind])}
    out = {}
    for other, cls in kinds.items():
        for f in dataclasses.fields(cls):
            if f.name not in own and f.name not in out:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                out[f.name] = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default
    return sorted(out.items())


@pytest.mark.parametrize("preset", ["mqgan-refiner", "vqgan"])
def test_the_schema_has_tagged_unions(preset):
    keys = {k: sorted(kinds) for k, kinds, _ in tagged_fields(load_config(preset=preset))}
    assert keys == {"model": ["image", "mel"], "model.backbone": ["convnext", "resnet1d", "resnet2d", "vit"],
                    "model.quantizer": sorted(REGISTRY), "discriminator": ["mel", "patchgan", "stylegan"],
                    "loss": ["image", "mel"], "data": ["image", "mel"]}


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_refuses_every_key_of_another_kind(preset):
    cfg = load_config(preset=preset)
    tried = 0
    for dotted, kinds, kind in tagged_fields(cfg):
        for key, value in foreign_keys(kinds, kind):
            override = f"{dotted}.{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            with pytest.raises(ConfigError, match=rf"{dotted}\.{key}: applies to (kind|modality) .*not '{kind}'"):
                load_config(preset=preset, overrides=[override])
            tried += 1
    assert tried >= 10   # every kind of every block, e.g. an image model: model.mel, model.causal, data.segment_frames


def test_an_unknown_kind_names_the_kinds():
    kinds = ", ".join(tagged_kinds(QuantizerConfig))   # fsq, vq, then the kinds added after them
    assert kinds.startswith("fsq, vq")
    with pytest.raises(ConfigError, match=rf"model.quantizer.kind: unknown kind 'lfq'; available: {kinds}$"):
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
    ("data.segment_frames=64", "data.segment_frames", "image"),
    ("data.min_seconds=1", "data.min_seconds", "image"),
    ("model.mel.n_mels=64", "model.mel", "image"),
    ("model.causal=true", "model.causal", "image"),
    ("data.image_size=32", "data.image_size", "mel"),
    ("data.random_flip=false", "data.random_flip", "mel"),
    ("model.image.channels=1", "model.image", "mel"),
    ("loss.perceptual_kind=seqgan", "loss.perceptual_kind", "mel"),
])
def test_the_keys_named_in_the_issue_are_refused(override, key, kind):
    preset = {"resnet1d": "mqgan-refiner", "resnet2d": "vqgan", "vit": "vit-vq", "patchgan": "vqgan",
              "image": "vqgan", "mel": "mqgan-refiner"}[kind]
    with pytest.raises(ConfigError, match=rf"override '{re.escape(override)}': {re.escape(key)}: applies to "
                                          rf"(kind|modality) .*not '{kind}'"):
        load_config(preset=preset, overrides=[override])


def test_data_and_loss_follow_the_models_modality():
    """A preset never says `data.modality`: the block takes the model's, and a block that names
    another modality is refused."""
    image = load_config(preset="vqgan")
    assert (image.data.modality, image.loss.modality, image.data.image_size) == ("image", "image", 64)
    assert load_config(preset="mqgan-refiner").data.segment_frames == 128
    with pytest.raises(ConfigError, match="data.modality: 'image' does not match model.modality 'mel'"):
        config_from_dict({"model": {"modality": "mel"}, "data": {"modality": "image"}})


def test_a_model_without_refiner_has_no_refiner_options():
    """model.refiner: null is a model without a refiner; giving refiner options over it builds one;
    the old `enabled` switch is refused with what replaced it, and saved configs that used it load."""
    assert load_config(preset="vqgan").model.refiner is None
    assert Tokenizer(load_config(preset="mqgan-refiner", overrides=["model.refiner=null"])).refiner is None
    on = load_config(preset="vqgan", overrides=["model.refiner.base_channels=4"])
    assert on.model.refiner.base_channels == 4 and on.model.refiner.mode == "isolated"
    with pytest.raises(ConfigError, match=r"model.refiner.enabled: no longer a key; the refiner is off with "
                                          r"model.refiner=null"):
        load_config(preset="mqgan-refiner", overrides=["model.refiner.enabled=false"])
    saved = load_config(preset="mqgan-refiner").to_dict()
    saved["model"]["refiner"]["enabled"] = False
    assert config_from_dict(saved, "saved config.yaml", saved=True).model.refiner is None
    saved["model"]["refiner"]["enabled"] = True
    assert config_from_dict(saved, "saved", saved=True).model.refiner == load_config(preset="mqgan-refiner").model.refiner


def test_a_flat_saved_image_config_loads_as_image_blocks():
    """Saved before the modality split: an image model's config.yaml held model.mel, model.causal,
    mel data keys and (unused) mel settings; they go, and the image keys stay."""
    saved = load_config(preset="vqgan").to_dict()
    saved["model"].update(causal=False, mel=dataclasses.asdict(load_config().model.mel))
    saved["data"].pop("modality"), saved["loss"].pop("modality")
    saved["data"].update(segment_frames=128, min_seconds=0.3, max_seconds=None, feature_cache=None,
                         feature_cache_dtype="float32")
    cfg = config_from_dict(saved, "saved config.yaml", saved=True)
    assert cfg == load_config(preset="vqgan")
    mel = load_config().to_dict()
    mel["loss"].update(perceptual=0.0, perceptual_kind="lpips", perceptual_alpha=0.0, vgg_weights=None,
                       lpips_weights=None)
    mel["data"].update(image_size=64, random_flip=True)
    mel["model"]["image"] = {"channels": 3}
    assert config_from_dict(mel, "saved config.yaml", saved=True) == load_config()


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

    ((dotted, kinds, kind),) = tagged_fields(load_config(preset=preset, schema=PriorConfig))
    assert dotted == "model" and sorted(kinds) == ["gpt", "maskgit"]
    for key, value in foreign_keys(kinds, kind):
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

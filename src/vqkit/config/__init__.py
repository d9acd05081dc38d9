"""Typed configs (schema.py) and their strict loading (io.py)."""
from .io import (PRESET_DIR, available_presets, config_from_dict, from_dict, load_config, parse_overrides,
                 save_config, tagged_kinds)
from .schema import (BackboneConfig, Config, ConfigError, DataConfig, DiscriminatorConfig, FSQConfig,
                     ImageConfig, LossConfig, MelConfig, ModelConfig, OptimConfig, QuantizerConfig, RefinerConfig,
                     TrainConfig, VQConfig)

__all__ = ["PRESET_DIR", "BackboneConfig", "Config", "ConfigError", "DataConfig", "DiscriminatorConfig",
           "FSQConfig", "ImageConfig", "LossConfig", "MelConfig", "ModelConfig", "OptimConfig", "QuantizerConfig",
           "RefinerConfig", "TrainConfig", "available_presets", "config_from_dict", "from_dict", "load_config",
           "parse_overrides", "save_config", "tagged_kinds", "VQConfig"]

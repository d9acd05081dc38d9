"""Typed configs (schema.py, model_schema.py, prior_schema.py) and their strict loading (io.py)."""
from .io import (PRESET_DIR, available_presets, config_from_dict, from_dict, load_config, parse_overrides,
                 save_config, tagged_kinds)
from .schema import (BackboneConfig, Config, ConfigError, ConvNeXtConfig, DataConfig, DiscriminatorConfig,
                     FSQConfig, ImageConfig, ImageDataConfig, ImageLossConfig, ImageModelConfig, LossConfig,
                     MelConfig, MelDataConfig, MelDiscriminatorConfig, MelLossConfig, MelModelConfig, ModelConfig,
                     OptimConfig, PatchGANConfig, QuantizerConfig, RefinerConfig, ResNet1dConfig, ResNet2dConfig,
                     StyleGANConfig, TrainConfig, VQConfig, ViTConfig)
from .quantizer_schema import BSQConfig, LFQConfig, RFSQConfig, SimVQConfig

__all__ = ["PRESET_DIR", "BSQConfig", "LFQConfig", "RFSQConfig", "SimVQConfig", "BackboneConfig", "Config", "ConfigError", "ConvNeXtConfig", "DataConfig",
           "DiscriminatorConfig", "FSQConfig", "ImageConfig", "ImageDataConfig", "ImageLossConfig",
           "ImageModelConfig", "LossConfig", "MelConfig", "MelDataConfig", "MelDiscriminatorConfig", "MelLossConfig",
           "MelModelConfig", "ModelConfig", "OptimConfig", "PatchGANConfig", "QuantizerConfig", "RefinerConfig",
           "ResNet1dConfig", "ResNet2dConfig", "StyleGANConfig", "TrainConfig", "VQConfig", "ViTConfig",
           "available_presets", "config_from_dict", "from_dict", "load_config", "parse_overrides", "save_config",
           "tagged_kinds"]

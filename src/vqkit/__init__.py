"""vqkit: train, evaluate and use discrete tokenizers.

    from vqkit import Tokenizer, MelFrontend, load_audio, vocoder_for
    tok = Tokenizer.from_pretrained("runs/mqgan-refiner-demo")
    mel = tok.frontend(torch.from_numpy(load_audio("speech.wav", tok.config.model.mel.sample_rate)))
    tokens = tok.encode(mel)            # (T,) integer ids in [0, tok.codebook_size)
    audio = vocoder_for(tok.config.model.mel)(tok.decode(tokens))
"""
from .config import Config, ConfigError, load_config
from .frontends.mel import MelFrontend
from .models.tokenizer import Tokenizer
from .version import __version__


def __getattr__(name):
    # Audio extras (librosa, soundfile, av) load only when asked for.
    if name == "load_audio":
        from .frontends.audio_io import load_audio
        return load_audio
    if name == "vocoder_for":
        from .vocoders import vocoder_for
        return vocoder_for
    raise AttributeError(f"module 'vqkit' has no attribute {name!r}")


__all__ = ["Config", "ConfigError", "MelFrontend", "Tokenizer", "load_audio", "load_config", "vocoder_for"]

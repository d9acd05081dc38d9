"""vqkit: train, evaluate and use discrete tokenizers.

    import vqkit
    tok = vqkit.load("runs/mqgan-refiner-demo")      # checkpoint or run directory -> Tokenizer
    tokens = tok.encode_audio(waveform, sample_rate) # (S,) floats in [-1, 1] -> (T'[, c]) ids in [0, tok.codebook_size)
    audio, sr = tok.decode_audio(tokens)             # -> (S',) float32 at the model's rate, through the vocoder
    tokens, token_lengths = tok.encode_audio(padded, sample_rate, lengths)   # (B, S) -> (B, T'max[, c]), (B,)
    prior = vqkit.load("runs/prior-gpt-demo")        # a token prior's directory (prior.json) -> TokenPrior

Below that: tok.frontend (audio -> log-mel), tok.encode / tok.decode (signal <-> tokens; images too),
vocoder_for(tok.config.model.mel) (log-mel -> audio), load_audio (any audio file, resampled).
docs/python-api.md has more. A tiny untrained tokenizer has the shapes of a trained one:

>>> import tempfile, torch, vqkit
>>> cfg = vqkit.load_config(preset="mqgan-refiner", overrides=[
...     "model.backbone.channels=[16]", "model.refiner.base_channels=4", "model.refiner.channel_mults=[1]"])
>>> with tempfile.TemporaryDirectory() as d:
...     tok = vqkit.load(vqkit.Tokenizer(cfg).save_pretrained(d))
>>> type(tok).__name__, tok.codebook_size, tok.config.model.mel.sample_rate
('Tokenizer', 1000, 22050)
>>> tokens = tok.encode_audio(torch.zeros(44100), 44100)   # 1 s at 44.1 kHz, resampled to 22.05 kHz
>>> tokens.shape, tokens.dtype
(torch.Size([86]), torch.int64)
>>> audio, sr = tok.decode_audio(tokens, vocoder="griffin-lim")
>>> audio.shape, sr                                         # 86 frames x hop 256
(torch.Size([22016]), 22050)
"""
from .config import Config, ConfigError, load_config
from .frontends.mel import MelFrontend
from .models.tokenizer import Tokenizer
from .version import __version__


def load(path_or_repo, map_location="cpu", **kwargs):
    """Tokenizer.from_pretrained, short; a local directory holding prior.json (a token prior's
    checkpoint, or a prior's run directory) gives TokenPrior.from_pretrained instead. Anything else
    goes to Tokenizer.from_pretrained with `kwargs`."""
    from pathlib import Path

    if Path(path_or_repo).exists():
        from .io.weights import resolve_checkpoint_dir
        from .priors.prior import META_NAME, TokenPrior

        if (resolve_checkpoint_dir(path_or_repo) / META_NAME).is_file():
            if kwargs:
                raise TypeError(f"vqkit.load of a token prior takes only map_location, got {sorted(kwargs)}")
            return TokenPrior.from_pretrained(path_or_repo, map_location)
    return Tokenizer.from_pretrained(path_or_repo, map_location, **kwargs)


def __getattr__(name):
    # Audio extras (librosa, soundfile, av) load only when asked for.
    if name == "load_audio":
        from .frontends.audio_io import load_audio
        return load_audio
    if name == "vocoder_for":
        from .vocoders import vocoder_for
        return vocoder_for
    raise AttributeError(f"module 'vqkit' has no attribute {name!r}")


__all__ = ["Config", "ConfigError", "MelFrontend", "Tokenizer", "load", "load_audio", "load_config", "vocoder_for"]

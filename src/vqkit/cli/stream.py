"""`vqkit stream CKPT in.wav -o out.wav --chunk-ms 40`: try streaming on a file.

The file is cut into chunks of --chunk-ms and each chunk goes through the mel frontend stream, the
encoder stream and the decoder stream as it would arrive from a microphone; the refined mel is then
vocoded (HiFi-GAN is not causal: it is run window by window after the tokenizer and timed apart).
Prints the tokenizer's algorithmic latency (computed from the model), the compute time per chunk
and the real-time factor. Causal models stream chunk by chunk; other models window by window, with
a latency of a window plus their future context.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .shared import load_tokenizer, log


def add_parser(sub) -> None:
    p = sub.add_parser("stream", help="stream an audio file through a tokenizer chunk by chunk (latency, speed)")
    p.add_argument("checkpoint", help="checkpoint or run directory (a causal model streams chunk by chunk)")
    p.add_argument("input", help="audio file")
    p.add_argument("-o", "--output", required=True, help="output .wav (the streamed reconstruction, vocoded)")
    p.add_argument("--chunk-ms", type=float, default=40.0, help="audio per chunk, in milliseconds (default 40)")
    p.add_argument("--tokens", default=None, help="also write the streamed tokens here (.npy + .json sidecar)")
    p.add_argument("--draft", action="store_true", help="stream the decoder draft, not the refined output")
    p.add_argument("--vocoder", choices=["auto", "hifigan", "griffin-lim"], default="auto")


def _chunks(blocks, size: int):
    """Re-cut a stream of sample blocks into chunks of `size` samples (the last one shorter)."""
    pending = np.zeros(0, np.float32)
    for block in blocks:
        pending = np.concatenate([pending, block])
        while pending.size >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending.size:
        yield pending


@torch.no_grad()
def stream_file(tok, src: Path, chunk_ms: float, refined: bool = True) -> dict:
    """Stream `src` through the tokenizer; returns the tokens, the mel and the timings."""
    from ..frontends.audio_stream import audio_blocks

    if tok.frontend is None or not hasattr(tok.frontend, "stream"):
        raise ValueError(f"{tok.config.name}: streaming applies to tokenizers of a time signal (mel, audio)")
    sr = tok.config.model.mel.sample_rate
    size = max(1, round(sr * chunk_ms / 1000))
    fe, enc, dec = tok.frontend.stream(), tok.stream_encoder(), tok.stream_decoder(refined)
    tokens, mels, per_chunk, samples = [], [], [], 0
    for chunk in _chunks(audio_blocks(src, sr), size):
        t0 = time.perf_counter()
        tokens.append(enc.push(fe.push(torch.from_numpy(chunk))))
        mels.append(dec.push(tokens[-1]))
        per_chunk.append(time.perf_counter() - t0)
        samples += chunk.size
    t0 = time.perf_counter()
    try:
        last = fe.flush()
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from None
    tokens += [enc.push(last), enc.flush()]
    mels += [dec.push(tokens[-2]), dec.push(tokens[-1]), dec.flush()]
    flush_s = time.perf_counter() - t0
    frames = tok.frontend.num_frames(samples)
    mel = torch.cat(mels, -1)[..., :frames]
    compute = sum(per_chunk) + flush_s
    return {"tokens": torch.cat(tokens, 0), "mel": mel, "seconds": samples / sr, "chunks": len(per_chunk),
            "compute_s": compute, "chunk_ms": np.array(per_chunk) * 1000}


def run(args) -> int:
    from ..vocoders import vocoder_for

    tok = load_tokenizer(args.checkpoint)
    if args.chunk_ms <= 0:
        raise ValueError(f"--chunk-ms must be > 0, got {args.chunk_ms}")
    from ..io.paths import refuse_overwriting_inputs

    src, dst = Path(args.input), Path(args.output)
    refuse_overwriting_inputs(src, [(src, dst)], dst)
    r = stream_file(tok, src, args.chunk_ms, refined=not args.draft)
    vocoder = vocoder_for(tok.config.model.mel, prefer=args.vocoder)
    t0 = time.perf_counter()
    from ..models.audio_files import write_wav

    write_wav(dst, iter([r["mel"]]), vocoder)
    vocode_s = time.perf_counter() - t0
    if args.tokens:
        from ..tokens_io import save_tokens

        save_tokens(args.tokens, r["tokens"].numpy(), tok, extra={"source": src.name})
    causal = tok.config.model.causal
    how = ("chunk by chunk" if causal else
           "window by window (not a causal model: latency is a window plus the future context)")
    log(f"{src} -> {dst}: {r['seconds']:.2f} s streamed {how} in {r['chunks']} chunks of {args.chunk_ms:g} ms; "
        f"{r['tokens'].shape[0]} tokens ({tok.tokens_per_second:.1f}/s)")
    log(f"latency: {tok.latency_ms:.1f} ms algorithmic (from the model: STFT window and hop, "
        f"{tok.time_context.lookahead_frames} frames of lookahead) + up to one chunk ({args.chunk_ms:g} ms) of buffering")
    log(f"speed: {r['seconds'] / max(r['compute_s'], 1e-9):.1f}x real time (real-time factor "
        f"{r['compute_s'] / max(r['seconds'], 1e-9):.3f}); compute per chunk median {np.median(r['chunk_ms']):.2f} ms, "
        f"95th percentile {np.percentile(r['chunk_ms'], 95):.2f} ms; vocoder ({vocoder.name}, after the tokenizer) "
        f"{r['seconds'] / max(vocode_s, 1e-9):.1f}x real time")
    return 0

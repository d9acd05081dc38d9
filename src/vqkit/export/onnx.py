"""A tokenizer as ONNX graphs plus what a runtime needs to use them (export.json).

    export_onnx(tok, folder) writes into `folder` (which must be new or empty):
      encoder.onnx    signal -> tokens          (normalisation and padding inside)
      decoder.onnx    tokens -> output[, draft] (denormalisation inside)
      frontend.onnx   waveform -> log-mel       (mel tokenizers)
      config.yaml     the checkpoint's config
      export.json     tokenizer id, codebook, rates, mel settings, every graph's inputs and outputs

The exporter is torch.onnx's dynamo exporter (torch.export, then onnxscript): it is the one that
exports the frontend's STFT (the TorchScript exporter refuses complex tensors), and it keeps the
sizes symbolic through the graph. Like any tracer it keeps the branches its example takes, so the
examples are chosen to take the general ones (export_onnx, example_grid). Each
file is written through io.files.atomic_write; weights are stored inside the .onnx file (no
external data), which holds models up to protobuf's 2 GiB.
"""
from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path

import torch

from ..config import save_config
from ..io.files import atomic_write
from ..tokens_io import tokenizer_meta
from .graphs import DecoderGraph, EncoderGraph, FrontendGraph

FORMAT = "vqkit-onnx-v1"
OPSET = 18


def _export(module: torch.nn.Module, example: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict) -> None:
    def write(tmp: str) -> None:
        with warnings.catch_warnings(), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, example, dynamo=True, opset_version=OPSET, input_names=inputs,
                                        output_names=outputs, dynamic_shapes=dynamic, external_data=False,
                                        verbose=False, report=False)
        program.save(tmp, external_data=False)

    atomic_write(path, write)


@contextlib.contextmanager
def _quiet(name: str):
    """The exporter's own log lines (e.g. 'torchvision is not installed. Skipping ...') off while it runs."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def _io(name: str, shape: list, dtype: str) -> dict:
    return {"name": name, "shape": shape, "dtype": dtype}


def graph_specs(tok) -> dict:
    """{graph: {inputs, outputs, notes}}: the names, shapes (ints fixed, strings dynamic) and dtypes."""
    m = tok.config.model
    c, f = m.input_channels, tok.downsample
    tail = [tok.tokens_per_position] if tok.tokens_per_position > 1 else []
    if tok.spatial_dims == 1:
        signal, spatial, positions = "mel", ["frames"], ["positions"]
        pad_note = (f"frames: any length >= 1; the graph pads the end with silence (log {m.mel.log_clamp}) to a "
                    f"multiple of {f}, as Tokenizer.encode, so positions = ceil(frames / {f})")
        out_spatial = [f"positions*{f}" if f > 1 else "positions"]
    else:
        signal, spatial, positions = "image", ["height", "width"], ["grid_height", "grid_width"]
        pad_note = (f"height, width: any size >= 1; the graph pads right and bottom by edge replication to "
                    f"multiples of {f}, as Tokenizer.encode, so grid = ceil(size / {f}); crop decoded images back")
        out_spatial = [f"grid_height*{f}", f"grid_width*{f}"] if f > 1 else ["grid_height", "grid_width"]
    units = "log-mel (natural units, as MelFrontend gives)" if tok.spatial_dims == 1 else "pixels in [-1, 1]"
    outputs = [_io(signal, ["batch", c, *out_spatial], "float32")]
    if tok.refiner is not None:
        outputs.append(_io("draft", ["batch", c, *out_spatial], "float32"))
    specs = {
        "encoder": {"file": "encoder.onnx", "inputs": [_io(signal, ["batch", c, *spatial], "float32")],
                    "outputs": [_io("tokens", ["batch", *positions, *tail], "int64")],
                    "notes": f"input: {units}; {pad_note}; normalisation is inside the graph"},
        "decoder": {"file": "decoder.onnx", "inputs": [_io("tokens", ["batch", *positions, *tail], "int64")],
                    "outputs": outputs,
                    "notes": (f"tokens: ids in [0, {tok.codebook_size}), not checked inside the graph (check "
                              "them first); output in the same units as the encoder's input"
                              + (", refined; draft: the decoder's output before the refiner" if tok.refiner
                                 is not None else "")
                              + (f"; every one of the {tok.stages} stages is decoded" if tok.stages else ""))},
    }
    if tok.frontend is not None:
        fe = tok.frontend
        specs["frontend"] = {
            "file": "frontend.onnx", "inputs": [_io("audio", ["batch", "samples"], "float32")],
            "outputs": [_io("mel", ["batch", m.mel.n_mels, "frames"], "float32")],
            "notes": (f"audio: mono, {m.mel.sample_rate} Hz, in [-1, 1], more than {fe.edge_pad} samples; "
                      f"frames = (samples + {2 * fe.edge_pad} - {m.mel.n_fft}) // {m.mel.hop_length} + 1; "
                      "the graph's STFT is ONNX's STFT operator")}
    return specs


def export_meta(tok) -> dict:
    m = tok.config.model
    tokens = tokenizer_meta(tok)   # what a token file's sidecar says: tokens from these graphs are the same
    meta = {"format": FORMAT, "tokens_format": tokens.pop("format"),
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}", "opset": OPSET, **tokens,
            "downsample": tok.downsample, "tokens_per_position": tok.tokens_per_position,
            "normalisation": "inside the graphs (the encoder normalises, the decoder denormalises)"}
    if tok.frontend is not None:
        meta["mel"] = {**m.mel.__dict__, "frames_per_second": m.mel.frames_per_second}
        meta["positions_per_second"] = m.mel.frames_per_second / tok.downsample
        meta["silence_level"] = tok.frontend.silence_level
    else:
        meta["image"] = {**m.image.__dict__, "range": [-1, 1]}
        meta["token_grid"] = f"ceil(height / {tok.downsample}) x ceil(width / {tok.downsample})"
    meta["graphs"] = graph_specs(tok)
    if tok.frontend is None:
        meta["frontend"] = "none: image tokenizers read pixels, no frontend to export"
    return meta


def example_grid(tok) -> tuple[int, int]:
    """Images: the token grid of the example the graphs are traced on. torch.export follows the
    branches the example takes and keeps them for the sizes that take them too, without an error
    for the others: window attention on a grid smaller than its window traces a graph that fails
    on larger grids (onnxruntime: a Reshape error). A grid above every window and no multiple of
    it (windows of 8: 19 x 21) traces the general branches, which hold for every size (the tests
    decode grids above, below and at multiples of the window)."""
    window = getattr(tok.config.model.backbone, "attention_window", 0) or 0
    return 2 * max(window, 4) + 3, 2 * max(window, 4) + 5


def export_onnx(tok, folder: str | Path, log=lambda msg: None) -> dict:
    """Write the graphs, config.yaml and export.json of tokenizer `tok` (put in eval mode, float32,
    on the CPU) into `folder` (created; the caller checks that it is new or empty). Returns
    export.json's content."""
    folder = Path(folder)
    tok = tok.eval().float().cpu()
    f, c = tok.downsample, tok.config.model.input_channels
    dyn = torch.export.Dim.DYNAMIC   # any size the model allows; an export error if tracing fixed one
    specs = graph_specs(tok)
    with torch.no_grad():
        if tok.spatial_dims == 1:   # a length that is no multiple of downsample (the pad is traced) nor of
            t = 64 * f + 3            # the refiner's poolings, long enough for their general branches
            x = torch.full((2, c, t), tok.frontend.silence_level) + torch.randn(2, c, t)
            signal, sizes = "mel", {0: dyn, 2: dyn}
        else:   # a token grid larger than any attention window and no multiple of it (see example_grid)
            gh, gw = example_grid(tok)
            x = torch.rand(2, c, gh * f - 1, gw * f - 1) * 2 - 1
            signal, sizes = "image", {0: dyn, 2: dyn, 3: dyn}
        log(f"exporting the encoder ({signal} -> tokens)")
        _export(EncoderGraph(tok), (x,), folder / "encoder.onnx", [signal], ["tokens"], {"x": sizes})
        ids = tok.encode(x)
        outputs = [o["name"] for o in specs["decoder"]["outputs"]]
        log(f"exporting the decoder (tokens -> {', '.join(outputs)})")
        _export(DecoderGraph(tok), (ids,), folder / "decoder.onnx", ["tokens"], outputs,
                {"ids": {i: dyn for i in range(1 + tok.spatial_dims)}})
        if tok.frontend is not None:
            log("exporting the frontend (audio -> log-mel)")
            audio = torch.randn(2, 4 * tok.config.model.mel.n_fft) * 0.1
            _export(FrontendGraph(tok.frontend), (audio,), folder / "frontend.onnx", ["audio"], ["mel"],
                    {"audio": {0: dyn, 1: dyn}})
    save_config(tok.config, folder / "config.yaml")
    meta = export_meta(tok)
    atomic_write(folder / "export.json", json.dumps(meta, indent=1) + "\n")
    return meta

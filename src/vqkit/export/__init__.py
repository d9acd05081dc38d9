"""ONNX export of a tokenizer: encoder, decoder and (mels) frontend graphs, and export.json."""
from .onnx import FILES, FORMAT, OPSET, export_meta, export_onnx

__all__ = ["FILES", "FORMAT", "OPSET", "export_meta", "export_onnx"]

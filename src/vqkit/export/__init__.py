"""ONNX export of a tokenizer: encoder, decoder and (mels) frontend graphs, and export.json."""
from .onnx import FORMAT, OPSET, export_meta, export_onnx

__all__ = ["FORMAT", "OPSET", "export_meta", "export_onnx"]

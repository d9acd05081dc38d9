"""`vqkit export CKPT --format onnx -o DIR`: the tokenizer as ONNX graphs (encoder, decoder and, for
mels, the frontend) plus config.yaml and export.json, what a runtime needs to use them."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .shared import log

NEEDS = ("onnx", "onnxscript")   # torch.onnx's dynamo exporter writes through both


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a tokenizer for serving (ONNX graphs + export.json)")
    p.add_argument("checkpoint", help="checkpoint or run directory")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="what to export to (default: %(default)s)")
    p.add_argument("-o", "--output", required=True, help="a new or empty folder for the graphs")


def check_export_folder(output: Path, checkpoint: Path) -> None:
    """-o: a new or empty folder, writable, and apart from the checkpoint it exports."""
    from ..io.paths import OutputPathError, check_output_folder, refuse_overlap

    check_output_folder(output, "-o")
    refuse_overlap(output, "-o", [("the checkpoint", checkpoint)])
    if output.is_dir():
        held = sorted(p.name for p in output.iterdir())
        if held:
            more = f" and {len(held) - 3} more" if len(held) > 3 else ""
            raise OutputPathError(f"-o {output}: not empty (holds {', '.join(held[:3])}{more}); vqkit export "
                                  "writes into a new or empty folder, so no old graph is mixed with new ones")


def run(args) -> int:
    from ..io.paths import output_folder
    from ..io.weights import resolve_checkpoint_dir

    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(f"--format onnx needs the Python package(s) {', '.join(missing)}, which are not "
                           "installed: pip install 'vqkit[export]'")
    ckpt = resolve_checkpoint_dir(args.checkpoint)   # a folder that is no checkpoint: refused here, naming it
    out = Path(args.output)
    check_export_folder(out, ckpt)
    from ..export import export_onnx
    from .shared import load_tokenizer

    tok = load_tokenizer(ckpt)
    with output_folder(out):
        meta = export_onnx(tok, out, log=log)
    for name, g in meta["graphs"].items():
        ins = ", ".join(f"{i['name']} {_shape(i['shape'])}" for i in g["inputs"])
        outs = ", ".join(f"{o['name']} {_shape(o['shape'])}" for o in g["outputs"])
        log(f"{out / g['file']}: {ins} -> {outs}")
    log(f"{out / 'export.json'}: tokenizer {meta['tokenizer_id']}, opset {meta['opset']}")
    return 0


def _shape(shape: list) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"

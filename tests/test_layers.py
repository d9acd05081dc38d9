"""The package is built floor by floor: a module imports only from its own floor or the floors below.

    0  io, config, nn, distributed, version      (files, configs, shared blocks)
    1  frontends, quantizers, losses, vocoders
    2  models, tokens_io, export   (export: ONNX graphs of a tokenizer, beside the model it cuts up)
    3  data
    4  priors
    5  evaluation
    6  modalities   (mel, image: what each modality's data, evaluation and files are, for the floors above)
    7  training
    8  the command line (cli/: one module per verb; __main__) and the package's own __init__

Every import counts, also the ones inside functions (they are the easy way to hide a cycle).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import vqkit

PACKAGE = Path(vqkit.__file__).parent
FLOORS = {
    0: {"io", "config", "nn", "distributed", "version"},
    1: {"frontends", "quantizers", "losses", "vocoders"},
    2: {"models", "tokens_io", "export"},
    3: {"data"},
    4: {"priors"},
    5: {"evaluation"},
    6: {"modalities"},
    7: {"training"},
    8: {"cli", "__main__", "__init__"},
}
FLOOR_OF = {unit: floor for floor, units in FLOORS.items() for unit in units}


def unit_of(relative: Path) -> str:
    """The unit a module belongs to: its top-level subpackage, or the top-level module's name."""
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_units(path: Path) -> list[tuple[int, str]]:
    """(line, unit) for every vqkit unit that the module at `path` imports."""
    relative = path.relative_to(PACKAGE)
    package = list(relative.parts[:-1])           # the module's package, below vqkit
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            if node.level - 1 > len(package):
                raise AssertionError(f"{relative}:{node.lineno}: relative import above the package")
            target = base + (node.module.split(".") if node.module else [])
            names = [target[0]] if target else [a.name for a in node.names]   # `from .. import x`
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vqkit":
            parts = node.module.split(".")
            found += [(node.lineno, parts[1])] if len(parts) > 1 else [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1]) for a in node.names
                      if a.name.startswith("vqkit.")]
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_floor():
    units = {unit_of(p.relative_to(PACKAGE)) for p in modules()}
    assert units - FLOOR_OF.keys() == set(), "give these a floor in FLOORS (and in the docstring)"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_floor_above_it(path):
    relative = path.relative_to(PACKAGE)
    unit = unit_of(relative)
    here = FLOOR_OF[unit]
    wrong = [f"{relative}:{line} imports vqkit.{target} (floor {FLOOR_OF.get(target)}) from floor {here}"
             for line, target in imported_units(path)
             if target in FLOOR_OF and target != unit and FLOOR_OF[target] > here]
    unknown = [f"{relative}:{line} imports vqkit.{target}, which has no floor"
               for line, target in imported_units(path) if target not in FLOOR_OF and target != unit]
    assert not wrong + unknown, "\n".join(wrong + unknown)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The scan itself: a floor-1 module importing training (floor 7) inside a function is caught,
    with the line named."""
    fake = tmp_path / "vqkit"
    (fake / "frontends").mkdir(parents=True)
    bad = fake / "frontends" / "bad.py"
    bad.write_text("import torch\n\ndef f():\n    from ..training.loop import TrainLoop\n    return TrainLoop\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"frontends/bad.py:4 imports vqkit.training \(floor 7\) from floor 1"):
        test_no_module_imports_from_a_floor_above_it(bad)

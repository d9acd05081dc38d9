"""Nothing in src/ loads a file in a way that can run code, or runs a shell: a scan of every module's
syntax tree, with import aliases resolved (`import pickle as p`, `from pickle import loads`,
`import torch as T; T.load`). The scan itself is tested on small snippets, one per form it must catch,
so a scan that silently stopped seeing something would fail here."""
from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "vqkit"
FORBIDDEN = {"pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.load", "marshal.loads", "yaml.load",
             "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all", "torch.jit.load", "dill.load",
             "dill.loads", "joblib.load", "shelve.open", "os.system", "os.popen", "builtins.eval", "builtins.exec",
             "eval", "exec"}
CHECKED = {"torch.load": ("weights_only", True), "numpy.load": ("allow_pickle", False)}   # keyword that must be literal


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from every import in the module."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    """`T.jit.load` -> 'torch.jit.load' (aliases resolved); None for anything but a name chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([names.get(node.id, node.id), *reversed(parts)])


def problems(source: str, where: str = "<snippet>") -> tuple[list[str], Counter]:
    """(what in `source` could run code, how often each checked loader was seen)."""
    tree = ast.parse(source, where)
    names = _aliases(tree)
    found, seen = [], Counter()
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            shell = next((k.value for k in node.keywords if k.arg == "shell"), None)
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                found.append(f"{where}:{node.lineno}: shell={ast.unparse(shell)}")
        if not isinstance(node, (ast.Name, ast.Attribute)) or isinstance(getattr(node, "ctx", None), ast.Store):
            continue
        name = _dotted(node, names)
        if name in FORBIDDEN:
            found.append(f"{where}:{node.lineno}: {name}")
        elif name in CHECKED:
            seen[name] += 1
            key, value = CHECKED[name]
            call = calls.get(id(node))
            kw = {k.arg: k.value for k in call.keywords} if call is not None else None
            ok = kw is not None and (key in kw or value is False) and (
                key not in kw or isinstance(kw[key], ast.Constant) and kw[key].value is value)
            if not ok:   # a bare reference (f = torch.load) cannot be checked: refused too
                found.append(f"{where}:{node.lineno}: {name} without {key}={value}")
    return found, seen


def test_no_loader_in_src_can_execute_code():
    seen, found = Counter(), []
    for path in sorted(SRC.rglob("*.py")):
        f, s = problems(path.read_text(), str(path.relative_to(SRC)))
        found += f
        seen += s
    assert not found
    assert seen["torch.load"] >= 1 and seen["numpy.load"] >= 1   # the scan sees the real loaders


SNIPPETS = {   # source -> what the scan must report
    "import pickle\npickle.loads(b)": "pickle.loads",
    "import pickle as p\np.load(f)": "pickle.load",
    "from pickle import loads\nloads(b)": "pickle.loads",
    "from pickle import loads as safe\nsafe(b)": "pickle.loads",
    "from pickle import Unpickler\nUnpickler(f).load()": "pickle.Unpickler",
    "import pickle\nf = pickle.loads": "pickle.loads",                   # referenced, not even called
    "import torch as T\nT.load(p)": "torch.load without weights_only=True",
    "import torch\ntorch.load(p, weights_only=False)": "torch.load without weights_only=True",
    "from torch import load\nload(p)": "torch.load without weights_only=True",
    "import torch\nf = torch.load\nf(p)": "torch.load without weights_only=True",
    "import torch.jit\ntorch.jit.load(p)": "torch.jit.load",
    "import numpy as np\nnp.load(p, allow_pickle=True)": "numpy.load without allow_pickle=False",
    "from numpy import load\nload(p, allow_pickle=flag)": "numpy.load without allow_pickle=False",
    "import yaml\nyaml.load(s, Loader=yaml.Loader)": "yaml.load",
    "from yaml import unsafe_load as u\nu(s)": "yaml.unsafe_load",
    "import marshal\nmarshal.loads(b)": "marshal.loads",
    "eval(text)": "eval",
    "import builtins\nbuiltins.exec(text)": "builtins.exec",
    "import os\nos.system(cmd)": "os.system",
    "import subprocess\nsubprocess.run(cmd, shell=True)": "shell=True",
    "import subprocess as sp\nsp.Popen(cmd, shell=use_shell)": "shell=use_shell",
}


@pytest.mark.parametrize("source", SNIPPETS)
def test_the_scan_catches(source):
    found, _ = problems(source)
    assert len(found) == 1 and found[0].endswith(SNIPPETS[source]), found


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(p, weights_only=True)",
    "import numpy as np\nnp.load(p)\nnp.load(p, allow_pickle=False, mmap_mode='r')",
    "import yaml\nyaml.safe_load(s)",
    "import subprocess\nsubprocess.run([binary, '--version'], capture_output=True)\nsubprocess.run(c, shell=False)",
    "from .pickle import loads\nloads(b)",      # a relative import is vqkit's own module, not the stdlib's
    "def load(p):\n    return p\nload(1)",
])
def test_the_scan_passes_safe_code(source):
    assert problems(source)[0] == []

"""The package layout's rules (README "Layout"), checked on every import in the source tree.

Stages, lowest first: data -> model -> optim -> train -> artifact -> eval -> runs. A module may import its own
stage, a stage below it, and the shared pieces at the package root (io, bpb, ranks, options); never a stage above it.
On top of that order: the model imports neither torch.distributed, lightning, callbacks nor eval; data never
imports eval; the artifact stage never imports the training module; nothing in golf_lit imports the ``golf-lit``
dispatcher (golf_lit.cli), and nothing but the dispatcher (the composition root, which wires LightningCLI's
callbacks in) imports the callbacks; there is no import cycle between golf_lit and callbacks modules. Imports inside
functions count (a lazy import is still a dependency); ``if TYPE_CHECKING:`` imports do not (they never run).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("data", "model", "optim", "train", "artifact", "eval", "runs")
SHARED = ("golf_lit", "golf_lit.io", "golf_lit.bpb", "golf_lit.ranks", "golf_lit.options")
FACE = ("golf_lit.cli", "golf_lit.__main__", "golf_lit._checkout")  # the console script and its checkout shim


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[0] == "callbacks":
        parts = ("golf_lit", *parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> list[str]:
    """Every module ``path`` imports at run time, relative imports resolved; ``from a import b`` gives a and a.b."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip = _type_checking_lines(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module or ""
            found += [base] + [f"{base}.{a.name}" for a in node.names]
    return found


def _sources(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, folder
    return files


def _within(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def _stage(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "golf_lit" and parts[1] in STAGES:
        return STAGES.index(parts[1])
    return None


GOLF_FILES = [p for p in _sources("golf_lit") if "assets" not in p.parts]

RULES = {  # stage -> what it may never import, whatever the order says
    "model": ("lightning", "pytorch_lightning", "torch.distributed", "callbacks", "golf_lit.callbacks",
              "golf_lit.eval"),
    "data": ("golf_lit.eval",),
    "artifact": ("golf_lit.train",),
}


def violations(path: Path) -> list[str]:
    """Every rule of the layout that ``path``'s imports break, one message each."""
    name = _module_name(path)
    if _within(name, FACE):
        return []
    own = _stage(name)
    found = []
    for target in imports_of(path):
        if _within(target, ("callbacks", "golf_lit.callbacks", "golf_lit.cli")):
            found.append(f"{name} imports {target} (only the dispatcher wires callbacks; nothing imports it)")
        if own is not None and _within(target, RULES.get(STAGES[own], ())):
            found.append(f"{name} imports {target} (stage {STAGES[own]} never does)")
        if not _within(target, ("golf_lit",)):
            continue
        stage = _stage(target)
        if own is None and (stage is not None or not _within(target, SHARED)):
            found.append(f"{name} (a shared piece) imports {target}")
        elif own is not None and stage is not None and stage > own:
            found.append(f"{name} (stage {STAGES[own]}) imports {target} (stage {STAGES[stage]}, above it)")
    return found


@pytest.mark.parametrize("path", GOLF_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_layout_rules(path: Path) -> None:
    assert violations(path) == []


def test_no_import_cycles() -> None:
    files = GOLF_FILES + _sources("callbacks")
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in imports_of(path):
            while target and target not in modules:  # ``from pkg import name``: the module, not the attribute
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own __init__
                edges.add(target)
        graph[name] = edges
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_rules_catch_a_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: each rule fires on a probe, lazy imports count, TYPE_CHECKING imports do not."""
    probes = {
        "artifact/_probe.py": "def f():\n    from golf_lit.train.module import GolfLM\n",  # artifact -> train
        "data/_probe.py": "from golf_lit.model import gpt\n",  # data -> a stage above
        "model/_probe.py": "import torch.distributed as dist\n",
        "eval/_probe.py": "def f():\n    import golf_lit.callbacks.ema\n",
        "runs/_probe.py": "from golf_lit.cli import main\n",
        "_probe.py": "from golf_lit.data import shards\n",  # a shared piece importing a stage
    }
    texts = {ROOT / "golf_lit" / rel: text for rel, text in probes.items()}
    clean = ROOT / "golf_lit" / "train" / "_probe.py"
    texts[clean] = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from golf_lit.runs import seeds\n"
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: texts.get(self) or real_read(self, encoding))
    for path in texts:
        assert bool(violations(path)) == (path != clean), (path, violations(path))

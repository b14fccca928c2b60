"""Pack the scorer's code into one self-contained, minified, compressed, self-extracting Python file.

The top record counts 31,999 bytes of code: its readable script minified with python-minifier, compressed and
base85-encoded inside a two-line ``exec`` stub (docs/top-stack.md §5.8; record folder
2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611, PR #1855). golf-lit does the same for the code a
scorer needs:

1. the module set is found by tracing the imports of :mod:`golf_lit.runs.pack.entry` through the golf_lit sources
   (every ``import``/``from ... import`` naming a golf_lit module, at any depth, plus its parent packages), so
   the set follows the package layout as it is, with no file list to keep up to date;
2. each module is minified (python-minifier when installed: docstrings removed, no renaming, no literal
   hoisting, asserts and annotations kept; else the stdlib ``ast`` with docstrings removed);
3. the sources, a small in-memory importer and the call of ``entry.main`` with the baked model config are
   compressed with lzma and base85-encoded into ``import lzma,base64;exec(...)``.

The packed file imports nothing from disk but torch, numpy, sentencepiece and zstandard (and the stdlib).
"""

from __future__ import annotations

import ast
import base64
import lzma
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import golf_lit
from golf_lit.model.config import ModelConfig

PACKED_NAME = "packed_eval.py"
ENTRY = "golf_lit.runs.pack.entry"
PACKAGE = "golf_lit"

# Runs inside the packed file: serve the packed sources to ``import`` ahead of anything installed on disk.
_BOOTSTRAP = """import sys,importlib.util as U
class _P:
 @staticmethod
 def find_spec(n,p=None,t=None):
  if n in S:return U.spec_from_loader(n,_P,is_package=S[n][0])
 @staticmethod
 def create_module(s):return None
 @staticmethod
 def exec_module(m):exec(compile(S[m.__name__][1],'<packed '+m.__name__+'>','exec'),m.__dict__)
sys.meta_path.insert(0,_P)
from {entry} import main
sys.exit(main(sys.argv[1:],{baked!r}))
"""


@dataclass(frozen=True)
class PackedCode:
    """A packed scorer.

    Attributes:
        script: The file's bytes (what is shipped and counted).
        modules: The packed module names, sorted.
        minifier: ``"python-minifier <version>"`` or ``"ast"``.
        source_bytes: UTF-8 bytes of the packed modules before minification.
        minified_bytes: ... after minification.
    """

    script: bytes
    modules: tuple[str, ...]
    minifier: str
    source_bytes: int
    minified_bytes: int


def _module_file(name: str, root: Path) -> tuple[Path, bool] | None:
    """``(file, is_package)`` of a golf_lit module under the package directory ``root``, or None."""
    rel = name.split(".")[1:]
    pkg = root.joinpath(*rel, "__init__.py")
    if pkg.is_file():
        return pkg, True
    mod = root.joinpath(*rel[:-1], f"{rel[-1]}.py") if rel else None
    if mod is not None and mod.is_file():
        return mod, False
    return None


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute names of every module an ``import`` statement anywhere in ``tree`` may load."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base_parts = parts if is_package else parts[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import submodule``
    return names


def scorer_modules(entry: str = ENTRY, root: Path | None = None) -> dict[str, tuple[Path, bool]]:
    """The golf_lit modules ``entry`` needs, found by following imports through the sources.

    Args:
        entry: Dotted name of the entry module.
        root: The golf_lit package directory (default: the imported package's).

    Returns:
        Module name -> (file, is_package), parents included, in sorted order.
    """
    root = Path(root) if root is not None else Path(golf_lit.__file__).resolve().parent
    found: dict[str, tuple[Path, bool]] = {}
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in found or not (name == PACKAGE or name.startswith(PACKAGE + ".")):
            continue
        located = _module_file(name, root)
        if located is None:
            continue  # ``from golf_lit.x import SomeClass``: the name is not a module
        found[name] = located
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run on import
        tree = ast.parse(located[0].read_text(encoding="utf-8"), filename=str(located[0]))
        todo.extend(_imported_names(tree, name, located[1]))
    if entry not in found:
        raise ValueError(f"pack: entry module {entry!r} not found under {root}")
    return dict(sorted(found.items()))


class _DropLiteralStatements(ast.NodeTransformer):
    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        return None if isinstance(node.value, ast.Constant) else node  # docstrings and attribute docstrings


def _strip_docstrings(source: str) -> str:
    tree = _DropLiteralStatements().visit(ast.parse(source))
    for node in ast.walk(tree):
        if isinstance(getattr(node, "body", None), list) and not node.body:
            node.body = [ast.Pass()]
    return ast.unparse(tree)


def minifier_name(minifier: str = "auto") -> str:
    """Which minifier ``minify`` uses: ``"python-minifier <version>"`` when installed (or asked for), else ``"ast"``."""
    if minifier not in ("auto", "python-minifier", "ast"):
        raise ValueError(f"pack: minifier must be 'auto', 'python-minifier' or 'ast', got {minifier!r}")
    if minifier == "ast":
        return "ast"
    try:
        import importlib.metadata

        import python_minifier  # noqa: F401

        return f"python-minifier {importlib.metadata.version('python-minifier')}"
    except ImportError:
        if minifier == "python-minifier":
            raise ValueError("pack: minifier 'python-minifier' is not installed (pip install 'golf-lit[pack]')")
        return "ast"


def minify(source: str, minifier: str = "auto") -> str:
    """Minify one module's source, keeping its behaviour: docstrings go, names, asserts and annotations stay.

    Annotations stay because dataclasses read them; asserts stay because they are checks.
    """
    if minifier_name(minifier) == "ast":
        return _strip_docstrings(source)
    import python_minifier

    return python_minifier.minify(
        source,
        remove_annotations=False,
        remove_pass=True,
        remove_literal_statements=True,
        combine_imports=True,
        hoist_literals=False,
        rename_locals=False,
        rename_globals=False,
        remove_object_base=True,
        convert_posargs_to_args=False,
        preserve_shebang=False,
        remove_asserts=False,
        remove_debug=False,
        remove_explicit_return_none=True,
    )


def baked_settings(model: ModelConfig, seq_len: int) -> dict[str, Any]:
    """What the packed file fixes: the model fields that differ from ModelConfig defaults, and the eval length."""
    default = ModelConfig().to_dict()
    return {"model": {k: v for k, v in model.to_dict().items() if default.get(k) != v}, "seq_len": int(seq_len)}


def build_packed(model: ModelConfig, seq_len: int, *, minifier: str = "auto", entry: str = ENTRY,
                 root: Path | None = None) -> PackedCode:
    """Build the self-extracting scorer for ``model`` evaluated at ``seq_len``.

    Run it as ``python packed_eval.py --artifact final_model.int6.ptz [--val-files GLOB --tokenizer MODEL]``.

    Returns:
        The packed file and what went into it.
    """
    modules = scorer_modules(entry, root)
    sources, raw, small = {}, 0, 0
    for name, (path, is_pkg) in modules.items():
        text = path.read_text(encoding="utf-8")
        mini = minify(text, minifier)
        raw += len(text.encode("utf-8"))
        small += len(mini.encode("utf-8"))
        sources[name] = (is_pkg, mini)
    payload = f"S={sources!r}\n" + _BOOTSTRAP.format(entry=entry, baked=baked_settings(model, seq_len))
    packed = base64.b85encode(lzma.compress(payload.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))
    script = b"import lzma,base64\nexec(lzma.decompress(base64.b85decode(b'" + packed + b"')))\n"
    return PackedCode(script, tuple(modules), minifier_name(minifier), raw, small)

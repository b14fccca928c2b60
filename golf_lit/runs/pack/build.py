"""Pack the code a run trains and scores with into one self-contained, minified, compressed ``train_gpt.py``.

The challenge counts the code of one ``train_gpt.py`` that trains, writes the artifact and scores it when run in
the records folder; the top record's is its readable script minified with python-minifier, compressed and
base85-encoded inside a two-line ``exec`` stub, 31,999 bytes (docs/top-stack.md §5.8; record folder
2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611, PR #1855). golf-lit does the same for its own code:

1. the module set is found by tracing the imports of the entry :mod:`golf_lit.runs.pack.record` (which runs
   ``golf-lit fit`` and ``golf-lit eval`` in-process) through the golf_lit sources, plus the golf_lit classes the
   run's config names (its callbacks): every ``import``/``from ... import`` naming a golf_lit module, at any
   depth, plus its parent packages, so the set follows the package layout, with no file list to keep up to date;
2. each module is minified (python-minifier when installed: docstrings removed, no renaming, no literal
   hoisting, asserts and annotations kept; else the stdlib ``ast`` with docstrings removed);
3. the sources, a small in-memory importer (a ``sys.meta_path`` finder over a dict: nothing is written to disk)
   and the call of the entry with the baked fit config and eval options are compressed with lzma and
   base85-encoded into ``import lzma,base64;exec(...)``.

The file imports only the distributions :func:`requirements` lists (pinned to the versions installed here) and
the stdlib, never an installed golf_lit. Its size is the run's counted code (``bytes_code``).
"""

from __future__ import annotations

import ast
import base64
import copy
import functools
import hashlib
import importlib.metadata
import json
import lzma
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import golf_lit

SCRIPT_NAME = "train_gpt.py"
REQUIREMENTS_NAME = "requirements.txt"
ENTRY = "golf_lit.runs.pack.record"
PACKAGE = "golf_lit"
CALLBACKS = "golf_lit.callbacks"
ARTIFACT_EXPORT = "golf_lit.callbacks.ArtifactExport"
NOT_PACKED = frozenset({"golf_lit.runs.pack.build"})
"""Modules never run inside ``train_gpt.py``: the generator itself (there the code bytes are the file's own size)."""

# Runs inside the packed file: serve the packed sources to ``import`` ahead of anything installed on disk.
# Modules get a ``__file__`` under a folder that does not exist (path arithmetic on it works and finds nothing),
# and their source goes into linecache, so tracebacks show it and inspect.getsource works (jsonargparse reads the
# source of GolfLM.__init__ to see where its **model_fields go).
_BOOTSTRAP = """import sys,linecache as L,importlib.util as U
class _P:
 @staticmethod
 def find_spec(n,p=None,t=None):
  if n in S:return U.spec_from_loader(n,_P,is_package=S[n][0])
 @staticmethod
 def create_module(s):return None
 @staticmethod
 def exec_module(m):
  n=m.__name__;k,s=S[n];f=m.__file__='<packed>/'+n.replace('.','/')+('/__init__.py'if k else'.py')
  L.cache[f]=len(s),None,s.splitlines(True),f;exec(compile(s,f,'exec'),m.__dict__)
sys.meta_path.insert(0,_P)
from {entry} import main
sys.exit(main(B,__file__))
"""


@dataclass(frozen=True)
class PackedCode:
    """A packed ``train_gpt.py``.

    Attributes:
        script: The file's bytes (what is shipped and counted).
        modules: The packed module names, sorted.
        minifier: ``"python-minifier <version>"`` or ``"ast"``.
        source_bytes: UTF-8 bytes of the packed modules before minification.
        minified_bytes: ... after minification.
        sources_sha256: sha256 of the traced modules' readable sources (names and texts): what ``submit`` compares
            to tell whether the code changed since the run.
        baked: What the file fixes: ``{"fit": portable fit config, "eval": eval options}``.
        requirements: ``requirements.txt`` lines (``name==version``), sorted.
    """

    script: bytes
    modules: tuple[str, ...]
    minifier: str
    source_bytes: int
    minified_bytes: int
    sources_sha256: str
    baked: dict[str, Any]
    requirements: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        """The entry ``code`` of a run's ``submission.json``."""
        return {"file": SCRIPT_NAME, "bytes": len(self.script), "modules": list(self.modules),
                "minifier": self.minifier, "source_bytes": self.source_bytes, "minified_bytes": self.minified_bytes,
                "sources_sha256": self.sources_sha256, "eval_args": list(self.baked["eval"]),
                "requirements": list(self.requirements)}


def _module_file(name: str, root: Path) -> tuple[Path, bool] | None:
    """``(file, is_package)`` of a golf_lit module under the package directory ``root``, or None.

    ``golf_lit.callbacks`` is ``root/callbacks`` in an install and the sibling ``callbacks/`` folder in a checkout.
    """
    rel = name.split(".")[1:]
    base = root
    if rel[:1] == ["callbacks"] and not (root / "callbacks").is_dir():
        base, rel = root.parent / "callbacks", rel[1:]
    pkg = base.joinpath(*rel, "__init__.py")
    if pkg.is_file():
        return pkg, True
    mod = base.joinpath(*rel[:-1], f"{rel[-1]}.py") if rel else None
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


def trace_modules(entries: str | list[str] = ENTRY, root: Path | None = None) -> dict[str, tuple[Path, bool]]:
    """The golf_lit modules ``entries`` need, found by following imports through the sources.

    Args:
        entries: Dotted name(s) of the entry module(s); the first must exist.
        root: The golf_lit package directory (default: the imported package's).

    Returns:
        Module name -> (file, is_package), parents included, in sorted order.
    """
    entries = [entries] if isinstance(entries, str) else list(entries)
    root = Path(root) if root is not None else Path(golf_lit.__file__).resolve().parent
    found: dict[str, tuple[Path, bool]] = {}
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in found or name in NOT_PACKED or not (name == PACKAGE or name.startswith(PACKAGE + ".")):
            continue
        located = _module_file(name, root)
        if located is None:
            continue  # ``from golf_lit.x import SomeClass``: the name is not a module
        found[name] = located
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run on import
        tree = ast.parse(located[0].read_text(encoding="utf-8"), filename=str(located[0]))
        todo.extend(_imported_names(tree, name, located[1]))
    if entries[0] not in found:
        raise ValueError(f"pack: entry module {entries[0]!r} not found under {root}")
    return dict(sorted(found.items()))


def config_class_modules(cfg: Any) -> list[str]:
    """Modules of the golf_lit classes a config names (``class_path`` values at any depth)."""
    found: list[str] = []
    if isinstance(cfg, dict):
        path = cfg.get("class_path")
        if isinstance(path, str) and path.startswith(PACKAGE + "."):
            found.append(path.rsplit(".", 1)[0])
        for v in cfg.values():
            found.extend(config_class_modules(v))
    elif isinstance(cfg, list):
        for v in cfg:
            found.extend(config_class_modules(v))
    return found


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
        import python_minifier  # noqa: F401

        return f"python-minifier {importlib.metadata.version('python-minifier')}"
    except ImportError:
        if minifier == "python-minifier":
            raise ValueError("pack: minifier 'python-minifier' is not installed (pip install 'golf-lit[pack]')")
        return "ast"


def minify(source: str, minifier: str = "auto") -> str:
    """Minify one module's source, keeping its behaviour: docstrings go, names, asserts and annotations stay.

    Annotations stay because dataclasses and jsonargparse read them; asserts stay because they are checks.
    Results are cached per process (the sources of one checkout are packed many times in a test session).
    """
    return _minify(source, minifier_name(minifier))


@functools.lru_cache(maxsize=512)
def _minify(source: str, minifier: str) -> str:
    if minifier == "ast":
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


PATH_KEYS = ("dirpath", "save_dir", "log_dir", "root_dir")
"""Callback/logger arguments that say where files go: ``train_gpt.py`` puts them under its run folder."""


def portable_fit_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The fit config ``train_gpt.py`` bakes in: the run's, without its seed and output paths.

    ``seed_everything``, ``ckpt_path``, ``config`` and ``trainer.default_root_dir`` go, and every callback/logger
    path argument becomes null; ``train_gpt.py`` sets them from ``SEED`` and ``RUN_ID``. So the seeds of one
    configuration bake the same file.
    """
    out = copy.deepcopy(cfg)
    for key in ("seed_everything", "ckpt_path", "config"):
        out.pop(key, None)
    trainer = out.get("trainer")
    if isinstance(trainer, dict):
        trainer.pop("default_root_dir", None)
        for key in ("callbacks", "logger"):
            entries = trainer.get(key)
            for entry in entries if isinstance(entries, list) else [entries]:
                args = entry.get("init_args") if isinstance(entry, dict) else None
                if isinstance(args, dict):
                    for name in PATH_KEYS:
                        if name in args:
                            args[name] = None
    return out


def _third_party(sources: dict[str, tuple[bool, str]]) -> set[str]:
    """Top-level names of the non-stdlib, non-golf_lit modules the sources import (module level or not)."""
    names: set[str] = set()
    for name, (is_pkg, text) in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n != PACKAGE and n not in sys.stdlib_module_names and n != "__future__"}


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


EXTRAS = {"jsonargparse": "signatures"}
"""Extras golf-lit's own dependencies name (pyproject.toml): LightningCLI needs jsonargparse's ``signatures``."""


def requirements(sources: dict[str, tuple[bool, str]]) -> tuple[str, ...]:
    """``name==version`` of the installed distributions that provide what the sources import, sorted.

    An import no installed distribution provides (an optional one, e.g. ``brotli`` when it is not installed) is
    left out: the code guards those imports.
    """
    provides = _packages_distributions()
    pins = set()
    for top in _third_party(sources):
        for dist in provides.get(top, []):
            extra = f"[{EXTRAS[dist]}]" if dist in EXTRAS else ""
            pins.add(f"{dist}{extra}=={importlib.metadata.version(dist)}")
    return tuple(sorted(pins, key=str.lower))


def sources_digest(sources: dict[str, str]) -> str:
    """sha256 of module names and readable sources (order-independent)."""
    return hashlib.sha256(json.dumps(sorted(sources.items()), ensure_ascii=False).encode("utf-8")).hexdigest()


def build_record_script(fit_config: dict[str, Any], eval_args: list[str] | None = None, *, minifier: str = "auto",
                        entry: str = ENTRY, root: Path | None = None) -> PackedCode:
    """Build ``train_gpt.py`` for a run: its fit config and claimed eval options baked in.

    Args:
        fit_config: The resolved ``golf-lit fit`` config (made portable here).
        eval_args: ``golf-lit eval`` options of the claimed evaluation (none: only export's roundtrip score).
        minifier: ``auto``, ``python-minifier`` or ``ast``.
        entry: Entry module (tests use their own).
        root: The golf_lit package directory (default: the imported package's).

    Returns:
        The packed file and what went into it.
    """
    baked = {"fit": portable_fit_config(fit_config), "eval": [str(a) for a in (eval_args or [])]}
    modules = trace_modules([entry, CALLBACKS, *config_class_modules(baked["fit"])], root)
    readable, sources, raw, small = {}, {}, 0, 0
    for name, (path, is_pkg) in modules.items():
        text = path.read_text(encoding="utf-8")
        mini = minify(text, minifier)
        raw += len(text.encode("utf-8"))
        small += len(mini.encode("utf-8"))
        readable[name] = text
        sources[name] = (is_pkg, mini)
    payload = f"S={sources!r}\nB={baked!r}\n" + _BOOTSTRAP.format(entry=entry)
    packed = base64.b85encode(lzma.compress(payload.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))
    script = b"import lzma,base64\nexec(lzma.decompress(base64.b85decode(b'" + packed + b"')))\n"
    return PackedCode(script, tuple(modules), minifier_name(minifier), raw, small, sources_digest(readable), baked,
                      requirements(sources))


def read_baked(script: bytes) -> dict[str, Any]:
    """The baked ``{"fit", "eval"}`` of a ``train_gpt.py`` golf-lit wrote, read without running it.

    Raises:
        ValueError: Not a file this module wrote.
    """
    prefix, suffix = b"import lzma,base64\nexec(lzma.decompress(base64.b85decode(b'", b"')))\n"
    if not (script.startswith(prefix) and script.endswith(suffix)):
        raise ValueError("not a train_gpt.py written by golf-lit (unexpected stub)")
    try:
        payload = lzma.decompress(base64.b85decode(script[len(prefix): -len(suffix)]), memlimit=1 << 28)
        tree = ast.parse(payload.decode("utf-8"))
    except (ValueError, lzma.LZMAError, SyntaxError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a train_gpt.py written by golf-lit ({exc})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["B"]:
            return ast.literal_eval(node.value)  # a literal: nothing runs
    raise ValueError("not a train_gpt.py written by golf-lit (no baked settings)")


def current_sources_digest(baked_fit: dict[str, Any], entry: str = ENTRY, root: Path | None = None) -> str:
    """:attr:`PackedCode.sources_sha256` of the sources as they are now, for a file that baked ``baked_fit``."""
    modules = trace_modules([entry, CALLBACKS, *config_class_modules(baked_fit)], root)
    return sources_digest({name: path.read_text(encoding="utf-8") for name, (path, _) in modules.items()})


def eval_option(eval_args: list[str], name: str) -> str | None:
    """The value the last ``name`` (``--x.y``) in ``golf-lit eval`` options gives: ``--x.y V`` or ``--x.y=V``,
    hyphens spelled as underscores after the ``--``; ``""`` for a bare flag, None when it is not given."""
    found = None
    for i, arg in enumerate(eval_args):
        key, eq, value = arg.partition("=")
        if key[:2] + key[2:].replace("-", "_") == name:
            nxt = eval_args[i + 1] if i + 1 < len(eval_args) else ""
            found = value if eq else ("" if nxt.startswith("--") else nxt)
    return found


def eval_strategies(eval_args: list[str]) -> list[str]:
    """The strategy chain baked ``golf-lit eval`` options run (``--strategy``; EvalConfig's default otherwise)."""
    from golf_lit.eval.config import EvalConfig

    chain = eval_option(eval_args, "--strategy") or EvalConfig.strategy
    return [s.strip() for s in chain.split(",") if s.strip()]

"""Run a Python file in a clean environment where only torch, numpy, sentencepiece and zstandard are importable.

The environment is a folder of links to those distributions and the distributions they require (torch needs
sympy, filelock, ...); the interpreter runs with ``-S`` (no site-packages, so no editable golf_lit, no
lightning) and ``-s``, with that folder as its only extra path.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ALLOWED = ("torch", "numpy", "sentencepiece", "zstandard")


def _closure(names) -> list[md.Distribution]:
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        dist = md.distribution(name)
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def make_site(folder: Path) -> Path:
    """Link the top-level entries of ALLOWED's distributions (and their requirements) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for dist in _closure(ALLOWED):
        for f in dist.files or []:
            top = f.parts[0]
            if top.endswith((".dist-info", ".pth")) or top in ("..", "__pycache__"):
                continue
            src = Path(dist.locate_file(top))
            dest = folder / top
            if src.exists() and not dest.exists():
                dest.symlink_to(src)
    return folder


def run_isolated(site: Path, args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -S -s ARGS`` with only ``site`` on the path and one thread."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1",
           "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-S", "-s", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)

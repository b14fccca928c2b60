"""Run a Python file in a clean environment where only the given distributions are importable (by default
torch, numpy, sentencepiece and zstandard; for a train_gpt.py, those of its requirements.txt).

The environment is a folder of links to those distributions (their dist-info included, so requirement checks
such as Lightning's see them) and the distributions they require, extras included (torch needs sympy,
filelock, ...); the interpreter runs with ``-S`` (no site-packages, so no editable golf_lit) and ``-s``, with
that folder as its only extra path.
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
    """The distributions ``names`` (requirement strings, extras allowed) need, themselves included."""
    seen: dict[str, md.Distribution] = {}
    todo = [Requirement(n) for n in names]
    done: set[tuple[str, frozenset]] = set()
    while todo:
        req = todo.pop()
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if (key, frozenset(req.extras)) in done:
            continue
        done.add((key, frozenset(req.extras)))
        dist = seen.setdefault(key, md.distribution(req.name))
        for spec in dist.requires or []:
            sub = Requirement(spec)
            extras = [""] + sorted(req.extras)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return list(seen.values())


def requirement_names(requirements: Path) -> list[str]:
    """Distribution names of a ``requirements.txt`` (``name==version`` lines)."""
    lines = [Requirement(line) for line in requirements.read_text().splitlines() if line.strip()]
    return [r.name + (f"[{','.join(sorted(r.extras))}]" if r.extras else "") for r in lines]


def make_site(folder: Path, names=ALLOWED) -> Path:
    """Link the top-level entries of ``names``' distributions (and their requirements) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for dist in _closure(names):
        for f in dist.files or []:
            top = f.parts[0]
            if top.endswith(".pth") or top in ("..", "__pycache__"):  # dist-info too: Lightning checks extras
                continue
            src = Path(dist.locate_file(top))
            dest = folder / top
            if src.exists() and not dest.exists():
                dest.symlink_to(src)
    return folder


def run_isolated(site: Path, args: list[str], cwd: Path, timeout: float = 600,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -S -s ARGS`` with only ``site`` on the path and one thread (plus ``env``)."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1",
           "HOME": str(cwd), **(env or {})}
    return subprocess.run([sys.executable, "-S", "-s", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)

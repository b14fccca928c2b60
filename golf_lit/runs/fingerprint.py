"""Hardware and software fingerprint of a run: which machine, which versions, which commit produced a result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("torch", "lightning", "numpy", "sentencepiece", "zstandard", "torchmetrics")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(path: str | Path | None = None) -> dict[str, Any] | None:
    """The git commit of the checkout holding ``path`` (default: this package) and whether it has local changes.

    Returns:
        ``{"commit": sha, "dirty": bool}``, or None outside a git checkout (e.g. an installed wheel).
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(status.strip())}


def hardware() -> dict[str, Any]:
    """The accelerators this process sees: CUDA device model and count, else the CPU model and core count."""
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        names = sorted({torch.cuda.get_device_name(i) for i in range(n)})
        return {"accelerator": "cuda", "device_count": n, "device_name": ", ".join(names)}
    return {"accelerator": "cpu", "device_count": 1, "device_name": _cpu_model(), "cpu_count": os.cpu_count()}


def fingerprint() -> dict[str, Any]:
    """Everything a reader needs to know where a number came from.

    Returns:
        ``hardware`` (see :func:`hardware`), ``python``, ``platform``, ``cuda`` (torch's CUDA build or None),
        ``cudnn``, ``versions`` of the packages that decide the numbers, ``git`` (commit + dirty flag, or None).
    """
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "hardware": hardware(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "versions": {name: _version(name) for name in _PACKAGES},
        "git": git_commit(),
    }


def describe(fp: dict[str, Any]) -> str:
    """One line: ``8x NVIDIA H100 80GB HBM3, torch 2.9.1 (CUDA 12.8), lightning 2.6.0, commit 1f487b3``."""
    hw = fp["hardware"]
    if hw["accelerator"] == "cuda":
        where = f"{hw['device_count']}x {hw['device_name']}"
    else:
        where = f"CPU ({hw['device_name']})"
    v = fp["versions"]
    cuda = f" (CUDA {fp['cuda']})" if fp.get("cuda") else ""
    git = fp.get("git")
    commit = f", commit {git['commit'][:7]}{' (dirty)' if git['dirty'] else ''}" if git else ""
    return f"{where}, torch {v.get('torch')}{cuda}, lightning {v.get('lightning')}{commit}"

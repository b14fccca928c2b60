"""Packaging: the top-level callbacks/ folder installs as golf_lit.callbacks; nothing named callbacks is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from .test_cli import ROOT, print_config


def test_callbacks_live_under_golf_lit():
    import golf_lit.callbacks as pkg
    from golf_lit.callbacks.ema import EMA

    assert pkg.EMA is EMA and EMA.__module__ == "golf_lit.callbacks.ema"
    assert pkg.__name__ == "golf_lit.callbacks"


def test_no_top_level_callbacks_package_outside_the_checkout(tmp_path):
    code = (
        "import importlib.util, golf_lit.callbacks as c; "
        "assert importlib.util.find_spec('callbacks') is None, importlib.util.find_spec('callbacks'); "
        "print(c.EMA.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "golf_lit.callbacks.ema"


def test_short_callbacks_names_still_resolve_in_configs(capsys, tmp_path):
    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    for cb in cfg["trainer"]["callbacks"]:
        cb["class_path"] = cb["class_path"].replace("golf_lit.callbacks.", "callbacks.")
    assert any(cb["class_path"] == "callbacks.EMA" for cb in cfg["trainer"]["callbacks"])
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(cfg))
    printed = print_config(capsys, "--config", str(tmp_path / "short.yaml"))
    assert [cb["init_args"] for cb in printed["trainer"]["callbacks"]][3] == {"decay": 0.95}
    import importlib

    import golf_lit.callbacks as pkg

    assert importlib.import_module("callbacks").EMA is pkg.EMA  # the alias the CLI set up: the very same classes
    assert importlib.import_module("callbacks.ema").EMA is pkg.EMA


def test_wheel_installs_callbacks_as_golf_lit_callbacks(tmp_path):
    src = tmp_path / "src"  # build from a copy: pip builds in-tree and would leave build/ in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "golf_lit", "callbacks"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), src],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    if out.returncode != 0 and "No module named pip" in out.stderr:
        pytest.skip("pip is not available")
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = tmp_path.glob("golf_lit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "golf_lit/callbacks/__init__.py" in names and "golf_lit/callbacks/ema.py" in names
    assert not [n for n in names if n.startswith("callbacks/")]
    assert "golf_lit/assets/tokenizers/fineweb_1024_bpe.model" in names

"""golf-lit plot: reading Lightning CSV logs, step -> training-time mapping, the PNG, and the missing-extra message."""

from __future__ import annotations

import builtins
import sys

import pytest

from golf_lit.cli import main
from golf_lit.runs.plot import MISSING_MATPLOTLIB, default_labels, find_metrics, read_metrics, to_time

# The shape Lightning's CSVLogger writes for golf-lit (one row per logging call, empty cells elsewhere).
CSV = """epoch,lr-Muon,step,train/loss,train/lr_mult,train/time_ms,val/bpb,val/loss
,0.025,0,,,,,
0,,0,6.9,1.0,500.0,,
0,,1,6.5,1.0,1500.0,,
0,,2,6.0,0.5,2500.0,,
0,,3,,,,3.25,5.5
"""


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run" / "lightning_logs" / "version_0"
    d.mkdir(parents=True)
    (d / "metrics.csv").write_text(CSV)
    return tmp_path / "run"


def test_read_metrics_and_time_axis(run_dir):
    m = read_metrics(find_metrics(run_dir))
    assert m["train/loss"] == [(0, 6.9), (1, 6.5), (2, 6.0)]
    assert m["train/lr_mult"] == [(0, 1.0), (1, 1.0), (2, 0.5)]
    assert m["val/bpb"] == [(3, 3.25)]
    assert m["time"] == [(0, 0.5), (1, 1.5), (2, 2.5)]
    # between logged steps the time is interpolated, past the last one it is clamped
    assert to_time([(1.5, 7.0), (3, 3.25)], m["time"]) == [(2.0, 7.0), (2.5, 3.25)]


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        find_metrics(tmp_path)
    bad = tmp_path / "metrics.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no 'step' column"):
        read_metrics(bad)
    bad.write_text("step,train/loss\n1,abc\n")
    with pytest.raises(ValueError, match=r"metrics.csv:2: expected numbers"):
        read_metrics(bad)


def test_default_labels_tell_runs_apart(tmp_path):
    assert default_labels([str(tmp_path / "a" / "seed1"), str(tmp_path / "b" / "seed1")]) == ["a/seed1", "b/seed1"]
    assert default_labels([str(tmp_path / "x"), str(tmp_path / "y")]) == ["x", "y"]


def test_png_of_two_runs(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.png"
    assert main(["plot", str(run_dir), str(run_dir / "lightning_logs" / "version_0" / "metrics.csv"),
                 "--labels", "a,b", "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert main(["plot", str(run_dir), "--labels", "a,b"]) == 2  # one label per run


def test_missing_matplotlib_message(run_dir, tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "p.png")]) == 2
    assert MISSING_MATPLOTLIB in capsys.readouterr().err
    assert "golf-lit[plot]" in MISSING_MATPLOTLIB and not (tmp_path / "p.png").exists()

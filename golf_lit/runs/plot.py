"""``golf-lit plot RUN_DIR...``: train loss, val_bpb and lr multiplier against step and training time, runs overlaid.

    golf-lit plot runs/smoke                          # -> runs/smoke/plot.png
    golf-lit plot runs/ablate/*/seed1337 --out ablate.png --labels ...

Each RUN_DIR is a run's ``default_root_dir`` (or any folder above its logs, or a ``metrics.csv``); the newest
``metrics.csv`` (Lightning's CSVLogger) under it is read. Training time is the ``WallClockLimit`` clock that
``callbacks.RecordLog`` logs as ``train/time_ms``; a log without it gets no time panels. matplotlib is an
optional extra: ``pip install 'golf-lit[plot]'``.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from golf_lit.io import atomic_write_bytes
from golf_lit.options import add_options, build, command_parser, parse
from golf_lit.runs.rundir import find_metrics

MISSING_MATPLOTLIB = "golf-lit plot needs matplotlib: pip install 'golf-lit[plot]' (or pip install matplotlib)"

# (CSV column, panel title)
SERIES = [("train/loss", "train loss"), ("val/bpb", "val_bpb"), ("train/lr_mult", "lr multiplier")]
TIME_COLUMN = "train/time_ms"


def read_metrics(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Column -> [(step, value)] for every non-empty cell, plus ``time`` -> [(step, training seconds)]."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "step" not in reader.fieldnames:
            raise ValueError(f"{path}: not a Lightning metrics.csv (no 'step' column)")
        out: dict[str, list[tuple[float, float]]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                step = float(row["step"])
                for col, _ in [*SERIES, (TIME_COLUMN, "")]:
                    if row.get(col) not in (None, ""):
                        out.setdefault(col, []).append((step, float(row[col])))
            except ValueError:
                raise ValueError(f"{path}:{line}: expected numbers, got {row}") from None
    if TIME_COLUMN in out:
        out["time"] = [(s, ms / 1000.0) for s, ms in out.pop(TIME_COLUMN)]
    return out


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Piecewise-linear interpolation (clamped at both ends); xs ascending."""
    if x <= xs[0]:
        return ys[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            t = (x - xs[i - 1]) / (xs[i] - xs[i - 1]) if xs[i] != xs[i - 1] else 1.0
            return ys[i - 1] + t * (ys[i] - ys[i - 1])
    return ys[-1]


def to_time(points: list[tuple[float, float]], time: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Map (step, value) points onto training seconds with the run's step -> time curve."""
    xs, ys = [s for s, _ in time], [t for _, t in time]
    return [(_interp(s, xs, ys), v) for s, v in points]


def render(runs: list[tuple[str, dict]], title: str | None = None, dpi: int = 80) -> bytes:
    """PNG bytes: one row per series, columns = against step / against training time."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(MISSING_MATPLOTLIB) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_time = any("time" in m for _, m in runs)
    ncols = 2 if has_time else 1
    fig, axes = plt.subplots(len(SERIES), ncols, figsize=(5.5 * ncols, 2.6 * len(SERIES)), squeeze=False)
    for r, (col, name) in enumerate(SERIES):
        for label, m in runs:
            pts = m.get(col, [])
            if not pts:
                continue
            style = {"marker": "o", "markersize": 3} if len(pts) < 20 else {}
            axes[r][0].plot([s for s, _ in pts], [v for _, v in pts], label=label, linewidth=1, **style)
            if has_time and "time" in m:
                tp = to_time(pts, m["time"])
                axes[r][1].plot([t for t, _ in tp], [v for _, v in tp], label=label, linewidth=1, **style)
        axes[r][0].set_ylabel(name)
        axes[r][0].set_xlabel("step")
        if has_time:
            axes[r][1].set_xlabel("training time (s)")
        for ax in axes[r]:
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def default_labels(paths: list[str]) -> list[str]:
    """The shortest path suffixes that tell the runs apart (``no_xsa/seed1337`` rather than ``seed1337``)."""
    parts = [Path(p).resolve().parts for p in paths]
    for k in range(1, max(len(x) for x in parts) + 1):
        labels = ["/".join(x[-k:]) for x in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


@dataclass
class PlotOptions:
    """golf-lit plot: the runs and the picture."""

    runs: list[str]
    """Run folders (or metrics.csv files)."""
    out: str | None = None
    """PNG path (default: <first RUN_DIR>/plot.png)."""
    labels: str | None = None
    """Comma list of legend labels (default: the shortest path suffixes that tell the runs apart)."""
    title: str | None = None
    """Figure title."""
    dpi: int = 80
    """PNG resolution, dots per inch."""


def build_parser():
    """The ``golf-lit plot`` parser (PlotOptions; the run folders are positional)."""
    parser = command_parser("golf-lit plot", __doc__.split("\n")[0])
    add_options(parser, PlotOptions, positional={"runs"})
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``golf-lit plot``."""
    args: PlotOptions = build(PlotOptions, parse(build_parser(), argv))
    labels = args.labels.split(",") if args.labels else default_labels(args.runs)
    if len(labels) != len(args.runs):
        raise ValueError(f"--labels: {len(labels)} labels for {len(args.runs)} runs")
    runs = [(label, read_metrics(find_metrics(r))) for label, r in zip(labels, args.runs)]
    try:
        png = render(runs, args.title, args.dpi)
    except ImportError as exc:
        print(exc, file=sys.stderr)
        return 2
    first = Path(args.runs[0])
    out = Path(args.out) if args.out else (first.parent if first.is_file() else first) / "plot.png"
    atomic_write_bytes(out, png)
    print(f"wrote {out} ({len(runs)} run(s))")
    return 0

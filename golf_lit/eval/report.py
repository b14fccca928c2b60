"""The evaluation report: result entries, the JSON file (written atomically, its path checked before any work),
the record-shaped log lines and the summary table."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from golf_lit.eval.sums import ScoreSums
from golf_lit.io import atomic_write_json


def check_output_path(path: str | None, option: str) -> None:
    """Fail now, in one line naming ``option`` and ``path``, if a file cannot be written at ``path`` later.

    Creates the missing parent directories and a temporary file beside ``path`` (removed again).
    """
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{option}: {str(p)!r} is a directory; give a file path")
    existing = next((a for a in p.absolute().parents if a.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"{option}: cannot write {str(p)!r}: {str(existing)!r} is a file, not a directory")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p.parent):
            pass
    except OSError as exc:
        raise ValueError(f"{option}: cannot write {str(p)!r}: {exc.strerror or exc} (in {str(p.parent)!r})") from exc


def write_json(path: str, obj: Any, option: str) -> None:
    """Write ``obj`` atomically; an I/O error becomes a one-line ``ValueError`` naming ``option`` and ``path``."""
    try:
        atomic_write_json(path, obj)
    except OSError as exc:
        raise ValueError(f"{option}: cannot write {str(path)!r}: {exc.strerror or exc}") from exc


def result_entry(name: str, strategy: str, variant: str, sums: ScoreSums, seconds: float,
                 settings: dict[str, Any]) -> dict[str, Any]:
    """One row of the report's ``results``."""
    return {
        "name": name,
        "strategy": strategy,
        "variant": variant,
        "val_loss": sums.val_loss,
        "val_bpb": sums.val_bpb,
        "tokens": int(sums.token_count),
        "bytes": int(sums.byte_count),
        "seconds": seconds,
        "tokens_per_second": sums.token_count / seconds if seconds > 0 else math.inf,
        "settings": settings,
    }


def record_line(entry: dict[str, Any], extra: str = "") -> str:
    """The record scripts' log line: ``NAME val_loss:x val_bpb:y[ extra] eval_time:Nms``."""
    return (f"{entry['name']} val_loss:{entry['val_loss']:.8f} val_bpb:{entry['val_bpb']:.8f}{extra} "
            f"eval_time:{entry['seconds'] * 1000:.0f}ms")


def data_line(data: dict[str, Any]) -> str:
    """One line naming the data every result of this run was scored on and where each setting came from."""
    origin = data.get("origin", {})
    return (f"eval_data val_files:{data['val_files']} ({origin.get('val_files', 'flag')}) "
            f"tokenizer:{data['tokenizer']} ({origin.get('tokenizer', 'flag')}) "
            f"seq_len:{data['seq_len']} ({origin.get('sliding.seq_len', 'flag')}) bytes:{data['byte_source']} "
            f"targets:{data['num_targets']}" + (f" note:{origin['note']}" if origin.get("note") else ""))


def timing_line(timings: dict[str, Any]) -> str:
    """``eval_timing data:..s deserialize:..s warmup:..s <label>:..s total:..s budget:600s fits:true``."""
    phases = " ".join(f"{k}:{v:.2f}s" for k, v in timings["phases"].items())
    budget = "none" if timings["budget_s"] is None else f"{timings['budget_s']:g}s"
    fits = "" if timings["fits"] is None else f" fits:{str(timings['fits']).lower()}"
    return f"eval_timing {phases} total:{timings['total_s']:.2f}s budget:{budget}{fits}"


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of results (name, val_bpb, val_loss, tokens, seconds, tokens/s)."""
    width = max(len(r["name"]) for r in results)
    lines = [f"{'name':<{width}}  {'val_bpb':>10}  {'val_loss':>10}  {'tokens':>10}  {'seconds':>9}  {'tok/s':>10}"]
    for r in results:
        lines.append(
            f"{r['name']:<{width}}  {r['val_bpb']:>10.6f}  {r['val_loss']:>10.6f}  {r['tokens']:>10d}  "
            f"{r['seconds']:>9.2f}  {r['tokens_per_second']:>10.1f}"
        )
    return "\n".join(lines)

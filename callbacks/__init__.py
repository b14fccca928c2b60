"""Lightning callbacks for golf-lit training: EMA, warmdown, wall-clock cap, compile priming, logs, export,
resumable checkpoints.

The project keeps them in the top-level ``callbacks/`` folder; they install as ``golf_lit.callbacks``. Configs
refer to them as ``class_path: golf_lit.callbacks.<Name>`` (``golf-lit fit`` also accepts ``callbacks.<Name>``).
"""

from golf_lit.callbacks.artifact import ArtifactExport
from golf_lit.callbacks.checkpoint import ResumableCheckpoint
from golf_lit.callbacks.ema import EMA
from golf_lit.callbacks.looping import LoopingSwitch
from golf_lit.callbacks.priming import CompilePriming
from golf_lit.callbacks.record_log import RecordLog
from golf_lit.callbacks.wallclock import WallClockLimit
from golf_lit.callbacks.warmdown import Warmdown

__all__ = [
    "ArtifactExport", "EMA", "CompilePriming", "LoopingSwitch", "RecordLog", "ResumableCheckpoint", "WallClockLimit",
    "Warmdown",
]

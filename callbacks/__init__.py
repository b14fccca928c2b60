"""Lightning callbacks for golf-lit training: EMA, warmdown, wall-clock cap, compile priming, logs, export.

Configs refer to them as ``class_path: callbacks.<Name>``.
"""

from callbacks.artifact import ArtifactExport
from callbacks.ema import EMA
from callbacks.looping import LoopingSwitch
from callbacks.priming import CompilePriming
from callbacks.record_log import RecordLog
from callbacks.wallclock import WallClockLimit
from callbacks.warmdown import Warmdown

__all__ = ["ArtifactExport", "EMA", "CompilePriming", "LoopingSwitch", "RecordLog", "WallClockLimit", "Warmdown"]

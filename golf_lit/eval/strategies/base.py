"""The one interface every evaluation strategy implements, and what the evaluator hands it.

A strategy is an object with a registry ``name`` (its ``--strategy`` name) built from its own settings; its one
scoring entry point is :meth:`Strategy.score`, which takes an :class:`EvalContext` (the model, the stream, the
byte source, this rank, Fabric's collectives, the optional invariant recorder) and nothing else, scores the
validation stream on one rank and returns float64 sums per variant (``"model"``, plus one per n-gram mixer
when it takes mixers). The evaluator (``golf_lit.eval.evaluator``) builds the strategies named on the command
line with :meth:`Strategy.from_config`, checks each against the stream before any work
(:meth:`Strategy.check`), warms each that compiles (:meth:`Strategy.compiles`) up on random tokens
(:meth:`Strategy.warmup`), then for each in order: checks the time budget, calls :meth:`Strategy.score`,
all-reduces the sums, checks that exactly :meth:`Strategy.expected_targets` positions were scored, and reports
them under ``<log_prefix>_<label>``.

Adding a strategy: a new file in this package with a ``Strategy`` subclass, and one line in
``golf_lit/eval/strategies/__init__.py``'s ``REGISTRY`` (see docs/evaluation.md). A strategy must keep the
four invariants of ``golf_lit.eval.invariants``; scoring through ``ctx.scorer()`` (a
:class:`golf_lit.eval.scorer.Scorer`, as roundtrip, sliding and ttt do) enforces them at run time and reports
every scored position to ``ctx.record``.

Outside the evaluator a strategy is used the same way, e.g.
``Roundtrip(seq_len=2048).score(EvalContext(model, tokens, luts))["model"]``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from golf_lit.data.byte_source import ByteSource
from golf_lit.eval.ngram import NgramConfig, NgramStoreConfig
from golf_lit.eval.scorer import Recorder, Scorer
from golf_lit.eval.sums import ScoreSums

if TYPE_CHECKING:
    from golf_lit.eval.config import EvalConfig


PAD_ID = 0
"""Input id placed after the end of a short window or document piece; causality keeps it out of every scored
position."""
IGNORE = -100
"""Target id that a training loss skips (``F.cross_entropy(ignore_index=IGNORE)``)."""
Trace = Callable[[str, int, Tensor], None]
"""``trace(kind, index, positions)``: what a TTT strategy scored ("score") and trained on; see
``golf_lit.eval.invariants.PhaseTrace``."""


def single_rank_sum(t: Tensor) -> Tensor:
    """The all-reduce of a single process: the identity."""
    return t


@dataclass
class EvalContext:
    """What a strategy gets on each rank: the loaded artifact, the stream, and Fabric's device/collectives.

    During warm-up the evaluator passes a copy whose ``tokens`` are random (never validation tokens) and whose
    ``mixers`` are empty. Outside the evaluator, ``EvalContext(model, tokens, luts)`` is a single CPU rank.
    """

    model: nn.Module
    """The artifact's model on ``device`` in eval mode. Never modify it (TTT adapts a deep copy)."""
    tokens: Tensor
    """The 1-D int64 token stream on the CPU: N + 1 tokens, N target positions (j predicts ``tokens[j + 1]``)."""
    luts: ByteSource
    """Byte source: the tokenizer's byte tables, or the CaseOps sidecar of this stream."""
    forward: nn.Module | None = None
    """``model`` or its compiled wrapper (use it for inference forwards); None = ``model``."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext
    """Context-manager factory for forwards (Fabric's precision); left at its default with ``autocast_dtype``
    set, it becomes ``torch.autocast(device.type, autocast_dtype)``."""
    autocast_dtype: torch.dtype | None = None
    """A shorthand for callers without Fabric: with ``autocast`` left at its default, forwards run under
    ``torch.autocast(device.type, autocast_dtype)`` (None: the weights' dtype). Strategies read ``autocast``."""
    all_reduce: Callable[[Tensor], Tensor] = single_rank_sum
    """Sums a tensor across ranks (identity on one rank)."""
    compile_fn: Callable[[nn.Module], nn.Module] | None = None
    """Wraps a module for compiled forwards (``torch.compile``) or None; for models a strategy builds itself."""
    mixers: Sequence[NgramConfig] = ()
    """N-gram mixer settings to score alongside the model (empty unless ``--ngram true`` and supported)."""
    store: NgramStoreConfig = field(default_factory=NgramStoreConfig)
    """How the n-gram count store is updated."""
    progress: Callable[[int], object] | None = None
    """Called with the number of positions scored per batch (a progress bar on rank 0), or None."""
    record: Recorder | None = None
    """Receives every scored position with its full distribution (``invariants.ScoreRecorder``), or None."""
    trace: Trace | None = None
    """Receives what a TTT strategy scored and trained on, in order (``invariants.PhaseTrace``), or None."""

    def __post_init__(self) -> None:
        if self.forward is None:
            self.forward = self.model
        self.device = torch.device(self.device)
        if self.autocast is contextlib.nullcontext and self.autocast_dtype is not None:
            device_type, dtype = self.device.type, self.autocast_dtype
            self.autocast = lambda: torch.autocast(device_type=device_type, dtype=dtype)

    def scorer(self) -> Scorer:
        """A :class:`Scorer` of this stream on this rank: the runtime guards, the n-gram mixers, the recorder and
        the progress callback of this context."""
        return Scorer(self.tokens, self.luts, self.device, mixers=self.mixers, store=self.store, record=self.record,
                      progress=self.progress)

    @property
    def num_targets(self) -> int:
        """Number of target positions N."""
        return self.tokens.numel() - 1


class Strategy(ABC):
    """One way of scoring the stream; subclasses set ``name`` and implement :meth:`score` and :meth:`settings`.

    Attributes:
        name: Registry key and ``--strategy`` value (class attribute).
        supports_ngram: Whether :meth:`score` scores ``ctx.mixers`` (class attribute).
        label: Report/log name after the log prefix (``final_int6_<label> val_loss:...``); unique per run.
    """

    name: ClassVar[str]
    supports_ngram: ClassVar[bool] = False
    label: str

    @classmethod
    def from_config(cls, cfg: EvalConfig) -> list[Strategy]:
        """The runs of this strategy that ``cfg`` asks for (one, or one per sweep setting), each built from its
        own settings; default: one run of a strategy without settings."""
        return [cls()]

    def compiles(self, ctx: EvalContext) -> bool:
        """Whether :meth:`score` runs compiled code under ``ctx`` (the evaluator then warms it up first)."""
        return ctx.compile_fn is not None

    def check(self, num_targets: int) -> None:
        """Raise ``ValueError`` (naming the option) if a stream of ``num_targets`` positions cannot be scored."""

    def expected_targets(self, num_targets: int) -> int:
        """Positions that :meth:`score` scores over all ranks (invariant 4 is checked against it)."""
        return num_targets

    def rank_targets(self, num_targets: int, rank: int, world_size: int) -> int:
        """Positions ``rank`` scores (the progress bar's total)."""
        return -(-self.expected_targets(num_targets) // world_size)

    def warmup_targets(self, world_size: int) -> int:
        """Positions of the random stream :meth:`warmup` scores: enough for a full batch of each forward shape on
        each of ``world_size`` ranks."""
        return world_size

    def warmup(self, ctx: EvalContext) -> None:
        """Compile warm-up: score the random stream in ``ctx`` once (results are discarded)."""
        self.score(ctx)

    @abstractmethod
    def score(self, ctx: EvalContext) -> dict[str, ScoreSums]:
        """Score this rank's share of ``ctx.tokens``; returns float64 sums per variant (``"model"`` first)."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The settings of this run, as stored in the report's ``settings``."""

    def line_extra(self) -> str:
        """Extra ``key:value`` fields of the record-shaped log line (e.g. ``" stride:64"``)."""
        return ""

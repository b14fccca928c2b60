"""The one interface every evaluation strategy implements, and what the evaluator hands it.

A strategy is a class with a registry ``name`` (its ``--strategy`` name) that scores the validation stream on
one rank and returns float64 sums per variant (``"model"``, plus one per n-gram mixer when it takes mixers).
The evaluator (``golf_lit.eval.evaluator``) builds the strategies named on the command line with
:meth:`Strategy.from_config`, checks each against the stream before any work (:meth:`Strategy.check`), warms
each up on random tokens when compiling (:meth:`Strategy.warmup`), then for each in order: checks the time
budget, calls :meth:`Strategy.score`, all-reduces the sums, checks that exactly
:meth:`Strategy.expected_targets` positions were scored, and reports them under ``<log_prefix>_<label>``.

Adding a strategy: a new file in this package with a ``Strategy`` subclass, and one line in
``golf_lit/eval/strategies/__init__.py``'s ``REGISTRY`` (see docs/evaluation.md, "Adding a strategy"). A strategy
must keep the four invariants of ``golf_lit.eval.invariants``; scoring through
:class:`golf_lit.eval.scorer.Scorer` (as sliding and ttt do) enforces them at run time.
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

from golf_lit.data.tokenizer import ByteLUTs
from golf_lit.eval.ngram import NgramConfig, NgramStoreConfig
from golf_lit.eval.sums import ScoreSums

if TYPE_CHECKING:
    from golf_lit.eval.config import EvalConfig


def single_rank_sum(t: Tensor) -> Tensor:
    """The all-reduce of a single process: the identity."""
    return t


@dataclass
class EvalContext:
    """What a strategy gets on each rank: the loaded artifact, the stream, and Fabric's device/collectives.

    During warm-up the evaluator passes a copy whose ``tokens`` are random (never validation tokens) and whose
    ``mixers`` are empty.
    """

    model: nn.Module
    """The artifact's model on ``device`` in eval mode. Never modify it (TTT adapts a deep copy)."""
    tokens: Tensor
    """The 1-D int64 token stream on the CPU: N + 1 tokens, N target positions (j predicts ``tokens[j + 1]``)."""
    luts: ByteLUTs
    """Byte tables of the tokenizer (bytes of each scored token)."""
    forward: nn.Module | None = None
    """``model`` or its compiled wrapper (use it for inference forwards); None = ``model``."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext
    """Context-manager factory for forwards (Fabric's precision)."""
    autocast_dtype: torch.dtype | None = None
    """The dtype ``autocast`` casts to (None: the weights' dtype), for code that takes a dtype."""
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

    def __post_init__(self) -> None:
        if self.forward is None:
            self.forward = self.model

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
        """The runs of this strategy that ``cfg`` asks for (one, or one per sweep setting)."""
        return [cls(cfg)]  # type: ignore[call-arg]

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

"""``--strategy phased_ttt``: phased score-first TTT, per-document LoRA plus global SGD phases.

Lineage (docs/top-stack.md §6.2-6.4): batched per-document LoRA TTT (record 2026-04-10 VarLen, PR #1530),
global-SGD pause (2026-04-13 Phasing), 3 phases (2026-04-14 Phases), alpha 144 + warm-start A (PR #1767), TOP
settings (PR #1855). This file holds the settings and the strategy; the procedure is in
``phased_ttt_engine.py`` beside it, the adapters in ``lora.py``, its runtime guards and trace in
``golf_lit/eval/invariants.py``. Bytes come from the context's byte source, so a CaseOps stream is charged its
original bytes (docs/top-stack.md §2.3).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from golf_lit.eval.strategies.base import EvalContext, Strategy
from golf_lit.eval.strategies.lora import TARGETS
from golf_lit.eval.strategies.phased_ttt_engine import PhasedRun, Workspace
from golf_lit.eval.sums import ScoreSums

if TYPE_CHECKING:
    from golf_lit.eval.config import EvalConfig


@dataclass(kw_only=True)
class PhasedTTTConfig:
    """Phased TTT settings; defaults are TOP's logged values (docs/top-stack.md §8, env names in brackets)."""

    name: str = "phased_ttt"
    """Name of this setting in the report."""
    prefix_docs: int = 2500
    """Documents (longest first) covered by the global phases [PHASED_TTT_PREFIX_DOCS]."""
    num_phases: int = 3
    """Global SGD phases; boundaries prefix_docs * k // num_phases [PHASED_TTT_NUM_PHASES]; 0 = LoRA only."""
    lora_rank: int = 80
    """LoRA rank [TTT_LORA_RANK]."""
    lora_alpha: float = 144.0
    """LoRA output scale alpha / rank [TTT_LORA_ALPHA]."""
    lora_targets: tuple[str, ...] = TARGETS
    """Which projections get adapters: q, k, v, o, mlp, head [TTT_K_LORA, TTT_O_LORA, TTT_MLP_LORA = 1]."""
    warm_start_a: bool = True
    """Keep A between batches, zero only B [TTT_WARM_START_A]."""
    lora_lr: float = 1e-4
    """AdamW lr [TTT_LORA_LR]."""
    beta1: float = 0.0
    """AdamW beta1 [TTT_BETA1]."""
    beta2: float = 0.99
    """AdamW beta2 [TTT_BETA2]."""
    eps: float = 1e-10
    """AdamW eps."""
    weight_decay: float = 0.5
    """AdamW weight decay [TTT_WEIGHT_DECAY]."""
    grad_steps: int = 1
    """AdamW steps per scored chunk [TTT_GRAD_STEPS]."""
    chunk_size: int = 48
    """Targets per scored chunk [TTT_CHUNK_SIZE]."""
    eval_seq_len: int = 2048
    """Context window of a chunk's forward [TTT_EVAL_SEQ_LEN]."""
    batch_size: int = 64
    """Documents per batch [TTT_BATCH_SIZE]."""
    global_lr: float = 1e-3
    """Global SGD peak lr, cosine-decayed over a phase's chunks [GLOBAL_TTT_LR]."""
    global_momentum: float = 0.9
    """Global SGD momentum; a fresh optimizer per phase [GLOBAL_TTT_MOMENTUM]."""
    global_epochs: int = 1
    """Passes over the phase's documents [GLOBAL_TTT_EPOCHS]."""
    global_chunk_tokens: int = 32768
    """Targets per global SGD step, all ranks together [GLOBAL_TTT_CHUNK_TOKENS]."""
    global_seq_len: int = 2048
    """Longest document piece of a global step (documents are cut into pieces this long)."""
    global_grad_clip: float = 1.0
    """Global gradient norm clip, 0 = off [GLOBAL_TTT_GRAD_CLIP]."""
    seed: int = 0
    """Seed of the adapters' A initialisation (per batch index, so it does not depend on the rank)."""
    bos_id: int = 1
    """Token that starts a document."""
    compile: bool = False
    """torch.compile the scoring/LoRA forward with dynamic shapes, as the record does; the evaluator warms it up
    on random tokens (never validation tokens) before the timed strategies."""

    def __post_init__(self) -> None:
        def bad(key: str, msg: str) -> ValueError:
            return ValueError(f"phased_ttt.{key}: {msg}")

        for key in ("lora_rank", "chunk_size", "eval_seq_len", "batch_size", "global_chunk_tokens",
                    "global_seq_len"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("prefix_docs", "num_phases", "grad_steps", "global_epochs"):
            if getattr(self, key) < 0:
                raise bad(key, f"must be >= 0, got {getattr(self, key)}")
        if self.eval_seq_len < self.chunk_size:
            raise bad("eval_seq_len", f"must be >= chunk_size ({self.chunk_size}), got {self.eval_seq_len}")
        unknown = set(self.lora_targets) - set(TARGETS)
        if unknown:
            raise bad("lora_targets", f"unknown {sorted(unknown)}; choose from {TARGETS}")
        if not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1 or not 0 <= self.global_momentum < 1:
            raise bad("beta1", "beta1, beta2 and global_momentum must be in [0, 1)")

    def boundaries(self, num_docs: int) -> list[int]:
        """Documents scored before each global phase (cumulative, clipped to ``num_docs``)."""
        if self.num_phases == 0:
            return []
        return [min(self.prefix_docs * k // self.num_phases, num_docs) for k in range(1, self.num_phases + 1)]


class PhasedTTT(Strategy):
    """``--strategy phased_ttt`` with the ``--phased_ttt.*`` settings (top config values by default).

    The context's model is never modified: the strategy adapts a copy (its :class:`Workspace`, kept across runs
    and restored to the artifact's weights before each, so that the compile warm-up and the timed run call the
    same compiled function).

    Args:
        cfg: Settings (default: TOP's).
    """

    name = "phased_ttt"

    def __init__(self, cfg: PhasedTTTConfig | None = None) -> None:
        self.cfg = cfg or PhasedTTTConfig()
        self.label = self.cfg.name
        self.timings: list[tuple[str, float]] = []
        self.work: Workspace | None = None

    @classmethod
    def from_config(cls, cfg: EvalConfig) -> list[Strategy]:
        return [cls(cfg.phased_ttt)]

    def compiles(self, ctx: EvalContext) -> bool:
        return self.cfg.compile

    def workspace(self, ctx: EvalContext) -> Workspace:
        """The adapted copy of ``ctx.model`` (built on first use, reused while the model is the same)."""
        if self.work is None or self.work.source is not ctx.model:
            self.work = Workspace(ctx.model, self.cfg)
        return self.work

    def warmup_lengths(self, world_size: int) -> list[int]:
        """Document lengths of the warm-up stream: two batches per rank of lengths 1 .. 3 chunks (rows drop out
        of a batch as its shorter documents end, down to one-token documents), and a first document longer than
        ``eval_seq_len`` (full-width windows)."""
        cfg = self.cfg
        n = 2 * world_size * cfg.batch_size
        return [cfg.eval_seq_len + cfg.chunk_size] + [1 + (i * 37) % (3 * cfg.chunk_size) for i in range(n - 1)]

    def warmup_targets(self, world_size: int) -> int:
        return sum(self.warmup_lengths(world_size))

    def warmup(self, ctx: EvalContext) -> None:
        """Score the random stream of ``ctx`` cut into the documents of :meth:`warmup_lengths` (BOS at each start;
        every other token stays random)."""
        bos = self.cfg.bos_id
        tokens = ctx.tokens.clone()
        tokens[tokens == bos] = 1 if bos == 0 else 0  # documents start exactly where warmup_lengths says
        starts = torch.tensor([0, *self.warmup_lengths(ctx.world_size)[:-1]]).cumsum(0)
        tokens[starts[starts < tokens.numel() - 1]] = bos
        self.score(replace(ctx, tokens=tokens))

    def score(self, ctx: EvalContext) -> dict[str, ScoreSums]:
        run = PhasedRun(self.cfg, ctx, self.workspace(ctx))
        sums = run.run()
        self.timings = run.timings
        return sums

    def settings(self) -> dict[str, Any]:
        return {"phased_ttt": asdict(self.cfg), "phase_seconds": dict(self.timings)}

    def line_extra(self) -> str:
        return f" phases:{self.cfg.num_phases} prefix_docs:{self.cfg.prefix_docs} chunk:{self.cfg.chunk_size}"

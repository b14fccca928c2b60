"""The ttt strategy: score-first test-time training (docs/record-stack.md §11.3 legal protocol).

Origin: record 2026-03-23_LeakyReLU_LegalTTT_ParallelMuon.

The stream's target positions are cut into chunks of ``chunk_tokens``; each sliding window belongs to the chunk
holding its first scored position. For chunk c: (1) score its windows under ``torch.inference_mode`` and *add*
them to the totals; (2) unless c is the last chunk, train on the chunk's targets. Training sequences cover only
target indices inside the chunk, all of which were scored in step (1) (the last window of a chunk may even
score a few positions past it). The reported score is the sum from step (1); nothing is ever re-scored.

Runs on a deep copy of the given model, so the caller's (artifact) model stays pristine. Gradients of a step
are summed across ranks through the ``all_reduce`` callable (the Evaluator passes Fabric's) and divided by the
step's global number of target tokens, so the update equals the single-process update on the same batch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from golf_lit.eval import invariants
from golf_lit.eval.scorer import Scorer
from golf_lit.eval.strategies.base import IGNORE, PAD_ID, EvalContext, Strategy, single_rank_sum
from golf_lit.eval.strategies.sliding import SlidingConfig, Windows, score_windows, sliding_windows
from golf_lit.eval.sums import ScoreSums
from golf_lit.ranks import rank_range

if TYPE_CHECKING:
    from golf_lit.eval.config import EvalConfig

OPTIMIZERS = ("sgd", "adamw")


@dataclass(kw_only=True)
class TTTConfig:
    """Score-first TTT settings. Defaults are the legal record's (SGD); the seed used AdamW lr 1e-4, 4 epochs,
    chunk 131072, freeze 2, no cosine (docs/record-stack.md §11.1), available through these same fields."""

    name: str = "ttt"
    """Name of this setting in the report (several can be swept from one loaded artifact)."""
    chunk_tokens: int = 32768
    """Target positions per chunk (legal record 32768; seed 131072)."""
    epochs: int = 3
    """Passes over each scored chunk (legal record 3; seed 4)."""
    optimizer: str = "sgd"
    """'sgd' (momentum, legal record) or 'adamw' (seed)."""
    lr: float = 0.002
    """Peak learning rate (legal record SGD 0.002; seed AdamW 1e-4)."""
    momentum: float = 0.9
    """SGD momentum."""
    beta1: float = 0.9
    """AdamW beta1 (PyTorch default, as the seed)."""
    beta2: float = 0.999
    """AdamW beta2 (PyTorch default, as the seed)."""
    weight_decay: float = 0.0
    """Weight decay of either optimizer."""
    cosine: bool = True
    """Decay the lr across chunks: lr_c = lr * (1 + cos(pi * c / (C - 1))) / 2 (legal record; the seed: off)."""
    freeze_blocks: int = 0
    """Freeze the parameters of the first this many blocks (legal record 0; seed 2)."""
    batch_seqs: int = 32
    """Training sequences per step and rank."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""

    def __post_init__(self) -> None:
        def bad(key: str, msg: str) -> ValueError:
            return ValueError(f"ttt.{key}: {msg}")

        if not self.name or self.name == "model":
            raise bad("name", f"must be a non-empty name other than 'model', got {self.name!r}")
        for key in ("chunk_tokens", "batch_seqs"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        if self.epochs < 0:
            raise bad("epochs", f"must be >= 0, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr < 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.freeze_blocks < 0:
            raise bad("lr", "lr, weight_decay, grad_clip and freeze_blocks must be >= 0")
        if not 0 <= self.momentum < 1 or not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise bad("momentum", "momentum, beta1 and beta2 must be in [0, 1)")

    def chunk_lr(self, chunk: int, num_chunks: int) -> float:
        """Learning rate used when training on ``chunk`` of ``num_chunks``."""
        if not self.cosine or num_chunks <= 1:
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * chunk / (num_chunks - 1)))


class TestTimeTrainer:
    """Runs the score-first protocol over the stream of ``ctx``; :meth:`run` is the whole protocol.

    Args:
        ctx: The model to adapt (a deep copy is taken; ``ctx.model`` is never modified), the stream, this rank,
            the sum all-reduce, autocast and ``compile_fn`` (wraps the adapted copy's forward).
        cfg: TTT settings.
        sliding: Window length / stride / scoring batch size.
        scorer: Receives every scored position (its ``horizon`` is kept up to date); default ``ctx.scorer()``.
    """

    __test__ = False  # not a pytest class

    def __init__(self, ctx: EvalContext, cfg: TTTConfig, sliding: SlidingConfig, scorer: Scorer | None = None) -> None:
        if ctx.world_size > 1 and ctx.all_reduce is single_rank_sum:
            raise ValueError("TTT on several ranks needs an all_reduce that sums gradients across them")
        self.model = copy.deepcopy(ctx.model)
        self.forward = ctx.compile_fn(self.model) if ctx.compile_fn is not None else self.model
        self.scorer = scorer or ctx.scorer()
        self.tokens = self.scorer.tokens
        self.cfg = cfg
        self.sliding = sliding
        self.rank, self.world_size = ctx.rank, ctx.world_size
        self.all_reduce = ctx.all_reduce
        self.autocast = ctx.autocast
        self.num_targets = ctx.num_targets
        self.windows = sliding_windows(self.num_targets, sliding.seq_len, sliding.stride)
        self.num_chunks = -(-self.num_targets // cfg.chunk_tokens)
        chunk_of = self.windows.score_from // cfg.chunk_tokens  # chunk holding each window's first scored position
        self.chunk_bounds = torch.searchsorted(chunk_of, torch.arange(self.num_chunks + 1)).tolist()
        self.horizon = 0
        """One past the largest target index any training step has used (0 before the first)."""
        blocks = getattr(self.model, "blocks", None)
        if cfg.freeze_blocks and (blocks is None or cfg.freeze_blocks > len(blocks)):
            raise ValueError(f"ttt.freeze_blocks={cfg.freeze_blocks} exceeds the model's {len(blocks or [])} blocks")
        for block in list(blocks or [])[: cfg.freeze_blocks]:
            block.requires_grad_(False)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                self.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        else:
            self.optimizer = torch.optim.AdamW(
                self.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
            )

    def run(self) -> None:
        """Score chunk 0, train on it, score chunk 1, train on it, ..., score the last chunk."""
        for c in range(self.num_chunks):
            self.score_chunk(c)
            if c < self.num_chunks - 1:
                self.train_chunk(c)

    def score_chunk(self, c: int) -> None:
        """Score this rank's contiguous share of chunk ``c``'s windows and add them to the totals."""
        w0, w1 = self.chunk_bounds[c], self.chunk_bounds[c + 1]
        r0, r1 = rank_range(w1 - w0, self.rank, self.world_size)
        sel = slice(w0 + r0, w0 + r1)
        mine = Windows(self.windows.start[sel], self.windows.score_from[sel], self.windows.end[sel])
        self.scorer.horizon = self.horizon
        self.model.eval()
        score_windows(self.forward, self.tokens, mine, self.scorer, self.sliding.seq_len, self.sliding.batch_seqs,
                      self.autocast)

    def chunk_sequences(self, c: int) -> Tensor:
        """Target-index ranges (S, 2) of the training sequences of chunk ``c`` (all ranks), inside the chunk."""
        lo = c * self.cfg.chunk_tokens
        hi = min(lo + self.cfg.chunk_tokens, self.num_targets)
        starts = torch.arange(lo, hi, self.sliding.seq_len)
        return torch.stack([starts, (starts + self.sliding.seq_len).clamp(max=hi)], dim=1)

    def train_chunk(self, c: int) -> None:
        """Train ``epochs`` passes over chunk ``c``'s sequences (split contiguously across ranks)."""
        seqs = self.chunk_sequences(c)
        done = self.chunk_bounds[c + 1]
        scored_upto = int(self.windows.end[done - 1]) if done else 0  # every rank has scored [0, scored_upto)
        invariants.require_scored(int(seqs[:, 1].max()), scored_upto, f"TTT training on chunk {c}")
        lr = self.cfg.chunk_lr(c, self.num_chunks)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        b = self.cfg.batch_seqs
        lengths = seqs[:, 1] - seqs[:, 0]
        shares = [rank_range(len(seqs), r, self.world_size) for r in range(self.world_size)]
        steps = -(-max(e - s for s, e in shares) // b)
        # Global number of targets in step k: every rank's k-th micro-batch (known without communication).
        step_targets = [
            sum(int(lengths[s + k * b : min(s + (k + 1) * b, e)].sum()) for s, e in shares) for k in range(steps)
        ]
        s0, s1 = shares[self.rank]
        self.model.train()
        for _ in range(self.cfg.epochs):
            for k in range(steps):
                self._step(seqs[s0 + k * b : min(s0 + (k + 1) * b, s1)], step_targets[k])
        self.horizon = max(self.horizon, int(seqs[:, 1].max()))

    def _step(self, batch: Tensor, n_global: int) -> None:
        self.optimizer.zero_grad(set_to_none=False)
        if len(batch):
            device = self.tokens.device
            seq_len = self.sliding.seq_len
            cols = torch.arange(seq_len, device=device)
            lo, hi = batch[:, :1].to(device), batch[:, 1:].to(device)
            idx = lo + cols  # (B, T) target indices; beyond hi is padding
            real = idx < hi
            safe = idx.clamp(max=self.num_targets - 1)
            x = torch.where(real, self.tokens[safe], PAD_ID)
            y = torch.where(real, self.tokens[safe + 1], IGNORE)
            with self.autocast():
                logits = self.forward(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE,
                                   reduction="sum") / n_global
            loss.backward()
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.world_size > 1:
            flat = torch.cat([p.grad.reshape(-1) for p in self.params])
            flat = self.all_reduce(flat)
            offset = 0
            for p in self.params:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()


class TestTimeTraining(Strategy):
    """``--strategy ttt``: score-first TTT over the sliding windows; one run per setting of ``ttt_sweep`` (else
    ``ttt``), each from the pristine artifact (the context's model is left untouched; a deep copy is adapted).

    Args:
        cfg: TTT settings (default: the legal record's).
        sliding: The windows that are scored (default: seq_len 2048, stride 64).
    """

    __test__ = False  # not a pytest class
    name = "ttt"
    supports_ngram = True

    def __init__(self, cfg: TTTConfig | None = None, sliding: SlidingConfig | None = None) -> None:
        self.cfg = cfg or TTTConfig()
        self.sliding = sliding or SlidingConfig()
        self.label = f"{self.cfg.name}_sliding_window"

    @classmethod
    def from_config(cls, cfg: EvalConfig) -> list[Strategy]:
        return [cls(t, cfg.sliding) for t in cfg.ttt_runs]

    def warmup_targets(self, world_size: int) -> int:
        return self.cfg.chunk_tokens + self.sliding.seq_len  # two chunks: one scored and trained, one scored

    def score(self, ctx: EvalContext) -> dict[str, ScoreSums]:
        """This rank's sums: ``"model"`` (the TTT-adapted model) and one entry per mixer of the context."""
        trainer = TestTimeTrainer(ctx, self.cfg, self.sliding)
        trainer.run()
        return trainer.scorer.sums()

    def settings(self) -> dict[str, Any]:
        return {**asdict(self.sliding), "ttt": asdict(self.cfg)}

    def line_extra(self) -> str:
        return f" stride:{self.sliding.stride} chunk:{self.cfg.chunk_tokens}"

"""The one place where positions are scored: model log-probs (and n-gram mixtures) -> float64 sums.

Every strategy (sliding window, score-first TTT) hands the scorer the logits of the positions it scores, in
stream order. The scorer enforces the invariants at runtime (``golf_lit.eval.invariants``): positions strictly
increase (each scored once), the scoring state has not seen them (score before update), and every mixed
distribution sums to 1 with all entries > 0. It updates the n-gram counts itself, lazily and only with targets
before the block being scored, so no strategy can insert a token before it is scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from golf_lit.data.byte_source import ByteSource
from golf_lit.eval import invariants
from golf_lit.eval.ngram import NgramConfig, NgramStore, NgramStoreConfig, ngram_distributions
from golf_lit.eval.sums import ScoreSums

MODEL = "model"
"""Variant name of the neural-only score."""

Recorder = Callable[[str, Tensor, Tensor, Tensor, Tensor, int], None]
"""``record(variant, positions, probs, dist, targets, horizon)``, e.g. ``invariants.ScoreRecorder``."""


class Scorer:
    """Accumulates float64 NLL/token/byte sums per variant (the model alone, and each n-gram mixer).

    Args:
        tokens: The whole token stream (1-D int64); position j predicts ``tokens[j + 1]``.
        luts: Byte source (LUTs, or the CaseOps sidecar of this stream; ``golf_lit.data.byte_source``).
        device: Device of the logits (sums live there; the n-gram store is numpy on the host).
        mixers: N-gram mixer settings scored alongside the model, sharing its forward.
        store: How the shared n-gram count store is updated.
        record: Optional per-step recorder for invariant tests.
        progress: Optional callback receiving the number of positions scored in each call.
    """

    def __init__(
        self,
        tokens: Tensor,
        luts: ByteSource,
        device: torch.device | str = "cpu",
        *,
        mixers: Sequence[NgramConfig] = (),
        store: NgramStoreConfig | None = None,
        record: Recorder | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> None:
        names = [m.name for m in mixers]
        if len(set(names)) != len(names):
            raise ValueError(f"mixers: names must be unique, got {names}")
        self.device = torch.device(device)
        self.tokens_host = tokens.detach().cpu().to(torch.int64)
        self.tokens = self.tokens_host.to(self.device)
        self.luts = luts.to(self.device)
        self.mixers = list(mixers)
        self.store_config = store or NgramStoreConfig()
        self.store: NgramStore | None = None
        self.record = record
        self.progress = progress
        self.horizon = 0
        """One past the last target index the model's weights were trained on (0 = none; set by TTT)."""
        self.last_scored = -1
        self._sums = {name: torch.zeros(3, dtype=torch.float64, device=self.device) for name in [MODEL, *names]}

    @property
    def num_targets(self) -> int:
        """Number of target positions of the stream."""
        return self.tokens_host.numel() - 1

    def sums(self) -> dict[str, ScoreSums]:
        """This rank's sums per variant (``"model"`` first, then each mixer by name)."""
        return {name: ScoreSums(*s.tolist()) for name, s in self._sums.items()}

    def score(self, positions: Tensor, logits: Tensor) -> None:
        """Score ``positions`` (M,) given the model's logits there (M, V).

        Args:
            positions: Target indices, strictly increasing and after every position scored before.
            logits: Logits predicting ``tokens[positions + 1]``.
        """
        if positions.numel() == 0:
            return
        positions = positions.to(self.device)
        last = int(positions[-1])
        if last >= self.num_targets or int(positions[0]) < 0:
            raise IndexError(f"positions {int(positions[0])}..{last} outside the stream's {self.num_targets} targets")
        invariants.require_increasing(positions, self.last_scored)
        invariants.require_unseen(positions, self.horizon, "model (test-time training)")
        targets = self.tokens[positions + 1]
        nbytes = self.luts.bytes_at(positions, self.tokens[positions], targets).to(torch.float64)
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        nll = -logp.gather(1, targets[:, None])[:, 0]
        self._add(MODEL, nll, nbytes)
        if self.record is not None:
            self.record(MODEL, positions, torch.exp(-nll), logp.exp(), targets, self.horizon)
        if self.mixers:
            self._score_mixers(positions, logits, targets, nbytes)
        self.last_scored = last
        if self.progress is not None:
            self.progress(positions.numel())

    def _add(self, name: str, nll: Tensor, nbytes: Tensor) -> None:
        s = self._sums[name]
        s[0] += nll.to(torch.float64).sum()
        s[1] += float(nll.numel())
        s[2] += nbytes.sum()

    def _prepare_store(self, block_start: int, vocab_size: int) -> NgramStore:
        """Bring the store to exactly the targets before ``block_start`` (all of them precede what is scored next)."""
        if self.store is None:
            orders = sorted({n for m in self.mixers for n in m.orders})
            self.store = NgramStore(self.tokens_host.numpy(), vocab_size, orders)
            if not self.store_config.prefill:
                self.store.skip_to(block_start)
        self.store.advance_to(block_start)
        return self.store

    def _score_mixers(self, positions: Tensor, logits: Tensor, targets: Tensor, nbytes: Tensor) -> None:
        logp64 = torch.log_softmax(logits.to(torch.float64), dim=-1)  # float64: sums to 1 within ~1e-15
        p_model = logp64.exp()
        entropy = -(p_model * logp64).sum(-1)
        pos_np = positions.cpu().numpy()
        block = pos_np // self.store_config.update_tokens
        cuts = [0, *(np.flatnonzero(np.diff(block)) + 1).tolist(), pos_np.size]
        for a, b in zip(cuts[:-1], cuts[1:]):
            store = self._prepare_store(int(block[a]) * self.store_config.update_tokens, logits.size(-1))
            invariants.require_unseen(pos_np[a:b], store.horizon, "n-gram store")
            horizon = max(self.horizon, store.horizon)
            dists = ngram_distributions(store, pos_np[a:b], self.mixers, p_model.dtype, p_model.device)
            seg_targets = targets[a:b]
            for mixer, (p_ng, matched) in zip(self.mixers, dists):
                alpha = mixer.alpha_of(entropy[a:b]) * matched
                dist = (1.0 - alpha)[:, None] * p_model[a:b] + alpha[:, None] * p_ng
                invariants.require_normalized(dist)
                prob = dist.gather(1, seg_targets[:, None])[:, 0]
                self._add(mixer.name, -torch.log(prob), nbytes[a:b])
                if self.record is not None:
                    self.record(mixer.name, positions[a:b], prob, dist, seg_targets, horizon)


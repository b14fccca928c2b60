"""The four honesty invariants of a code length: runtime guards used by every strategy, and checkers for tests.

A bpb number is a true code length only if (1) p_t depends on the artifact and tokens before t alone, (2) p_t
is read off a full distribution over the vocabulary that sums to 1 with every entry > 0, (3) every update
(TTT step, n-gram insert) uses only tokens already scored, and (4) every token is scored exactly once.

Positions are *target indices*: index j predicts token ``tokens[j + 1]`` from ``tokens[: j + 1]``.
The guards (``require_*``) run inside the scorer and the TTT engines on every batch and raise
:class:`InvariantError`; :class:`ScoreRecorder` collects what was scored, and :class:`PhaseTrace` what a TTT
strategy scored and trained on, so tests can check the same properties from outside.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

NORMALIZATION_TOL = 1e-6


class InvariantError(RuntimeError):
    """A scoring step would break one of the four invariants (the message names which)."""


def require_increasing(positions: Tensor, last_scored: int) -> None:
    """Invariant 4 guard: ``positions`` strictly increase and all lie after ``last_scored``.

    Every strategy scores a rank's positions in stream order, so a repeat (e.g. the seed's tail windows
    re-scoring the last tokens) shows up as a position that does not increase.

    Args:
        positions: 1-D target indices about to be scored.
        last_scored: The largest target index scored so far by this scorer (-1 if none).
    """
    if positions.numel() == 0:
        return
    first = int(positions[0])
    if first <= last_scored:
        raise InvariantError(
            f"invariant 4 (score each token once): position {first} is not after the last scored position {last_scored}"
        )
    steps = positions[1:] - positions[:-1]
    if bool((steps <= 0).any()):
        at = int(positions[1:][steps <= 0][0])
        raise InvariantError(f"invariant 4 (score each token once): position {at} repeats or goes backwards in a batch")


def require_unseen(positions: Tensor | np.ndarray, horizon: int, what: str) -> None:
    """Invariant 3 guard: the state about to score ``positions`` has only seen targets ``< horizon <= min``.

    Args:
        positions: Target indices about to be scored.
        horizon: One past the largest target index the scoring state (TTT weights, n-gram counts) was updated
            with; 0 for a state that saw nothing.
        what: Names the state in the error (``"ttt"``, ``"ngram store"``).
    """
    if len(positions) == 0:
        return
    first = int(positions.min())
    if horizon > first:
        raise InvariantError(
            f"invariant 3 (score before update): the {what} has seen target index {horizon - 1} "
            f"but is about to score position {first}"
        )


def require_scored(train_upto: int, scored_upto: int, what: str) -> None:
    """Invariant 3 guard: an update may use targets ``< train_upto`` only if all of ``[0, train_upto)`` are scored.

    Args:
        train_upto: One past the largest target index the update would use.
        scored_upto: Every target index below this has already been scored (by some rank).
        what: Names the update in the error.
    """
    if train_upto > scored_upto:
        raise InvariantError(
            f"invariant 3 (score before update): {what} would use target index {train_upto - 1}, "
            f"but only positions below {scored_upto} are scored"
        )


def require_unscored(scored: Tensor, positions: Tensor, what: str) -> None:
    """Invariant 4: none of ``positions`` was scored before."""
    if bool(scored[positions].any()):
        first = int(positions[scored[positions]][0])
        raise InvariantError(f"invariant 4 (score each token once): {what} re-scores position {first}")


def require_all_scored(scored: Tensor, positions: Tensor, what: str) -> None:
    """Invariant 3: every one of ``positions`` was scored before this update uses it."""
    if not bool(scored[positions].all()):
        first = int(positions[~scored[positions]][0])
        raise InvariantError(f"invariant 3 (score before update): {what} would train on unscored index {first}")


def require_not_last_chunk(is_last: bool, what: str) -> None:
    """Score-first for the final chunk: a document's last chunk is never trained on."""
    if is_last:
        raise InvariantError(f"invariant 3 (score before update): {what} would train on a document's last chunk")


def require_normalized(dist: Tensor, tol: float = NORMALIZATION_TOL) -> None:
    """Invariant 2 guard: every row of ``dist`` (M, V) sums to 1 within ``tol`` and every entry is > 0."""
    if dist.numel() == 0:
        return
    err = float((dist.sum(dim=-1, dtype=torch.float64) - 1.0).abs().max())
    low = float(dist.min())
    if not err <= tol or not low > 0.0:
        raise InvariantError(
            f"invariant 2 (full normalized distribution): max |sum - 1| = {err:.3g} (tolerance {tol:g}), "
            f"min entry = {low:.3g} (must be > 0)"
        )


@dataclass
class ScoreEvent:
    """One scoring step of one variant, as the scorer saw it (float64 numpy copies)."""

    variant: str
    positions: np.ndarray
    probs: np.ndarray
    dist: np.ndarray | None
    dist_sum: np.ndarray
    dist_min: np.ndarray
    realized: np.ndarray
    horizon: int


@dataclass
class ScoreRecorder:
    """Collects every scoring step (pass it as ``record=`` to a strategy) and checks the invariants on them.

    Args:
        keep_dists: Also keep the full (M, V) distributions (for perturbation tests on tiny models).
    """

    keep_dists: bool = False
    events: list[ScoreEvent] = field(default_factory=list)

    def __call__(
        self, variant: str, positions: Tensor, probs: Tensor, dist: Tensor, targets: Tensor, horizon: int
    ) -> None:
        """Record one step: ``probs[i]`` is the probability given to ``targets[i]`` at ``positions[i]``."""
        d = dist.detach().to("cpu", torch.float64)
        self.events.append(
            ScoreEvent(
                variant=variant,
                positions=positions.detach().cpu().numpy().astype(np.int64),
                probs=probs.detach().to("cpu", torch.float64).numpy(),
                dist=d.numpy().copy() if self.keep_dists else None,
                dist_sum=d.sum(-1).numpy(),
                dist_min=d.min(-1).values.numpy(),
                realized=d.gather(1, targets.detach().cpu().long()[:, None])[:, 0].numpy(),
                horizon=int(horizon),
            )
        )

    def variants(self) -> list[str]:
        """Variant names in first-seen order."""
        return list(dict.fromkeys(e.variant for e in self.events))

    def _of(self, variant: str) -> list[ScoreEvent]:
        events = [e for e in self.events if e.variant == variant]
        if not events:
            raise KeyError(f"no scoring events recorded for variant {variant!r} (have {self.variants()})")
        return events

    def positions(self, variant: str) -> np.ndarray:
        """All scored positions of ``variant`` in scoring order."""
        return np.concatenate([e.positions for e in self._of(variant)])

    def distributions(self, variant: str) -> dict[int, np.ndarray]:
        """Position -> full distribution (needs ``keep_dists``)."""
        out: dict[int, np.ndarray] = {}
        for e in self._of(variant):
            if e.dist is None:
                raise ValueError("ScoreRecorder(keep_dists=True) is needed for distributions()")
            out.update(zip(e.positions.tolist(), e.dist))
        return out

    def check_once(self, variant: str, num_targets: int) -> list[str]:
        """Invariant 4: the scored positions are exactly 0..num_targets-1, each once. Returns the violations."""
        pos = self.positions(variant)
        problems = []
        uniq, counts = np.unique(pos, return_counts=True)
        if (counts > 1).any():
            problems.append(f"{variant}: {int((counts > 1).sum())} positions scored more than once "
                            f"(e.g. {uniq[counts > 1][:5].tolist()}), {pos.size - uniq.size} extra scores")
        if pos.size != num_targets:
            problems.append(f"{variant}: {pos.size} scores for {num_targets} targets")
        missing = np.setdiff1d(np.arange(num_targets), uniq)
        if missing.size:
            problems.append(f"{variant}: {missing.size} positions never scored (e.g. {missing[:5].tolist()})")
        return problems

    def check_normalized(self, variant: str, tol: float = NORMALIZATION_TOL) -> list[str]:
        """Invariant 2: each scored probability is read off a distribution summing to 1 with all entries > 0."""
        problems = []
        for e in self._of(variant):
            err = np.abs(e.dist_sum - 1.0)
            if (err > tol).any():
                at = e.positions[err > tol][:5].tolist()
                problems.append(f"{variant}: distribution sums off by up to {err.max():.3g} at {at}")
            if (e.dist_min <= 0).any():
                problems.append(f"{variant}: zero/negative entries at {e.positions[e.dist_min <= 0][:5].tolist()}")
            if not np.allclose(e.probs, e.realized, rtol=1e-12, atol=0.0):
                problems.append(f"{variant}: scored probability differs from the distribution's entry for the target")
        return problems

    def check_score_before_update(self, variant: str) -> list[str]:
        """Invariant 3: the state that scored each position had only seen earlier targets."""
        problems = []
        for e in self._of(variant):
            if e.positions.size and e.horizon > int(e.positions.min()):
                first = int(e.positions.min())
                problems.append(f"{variant}: state had seen target {e.horizon - 1} when scoring {first}")
        return problems


@dataclass
class PhaseTrace:
    """What a phased TTT run scored and trained on, in order (for the invariant tests)."""

    events: list[tuple[str, int, Tensor]] = field(default_factory=list)
    """``(kind, doc, positions)`` with kind "score", "lora" (doc = document index) or "global" (doc = phase)."""

    def __call__(self, kind: str, doc: int, positions: Tensor) -> None:
        self.events.append((kind, doc, positions.detach().cpu().clone()))

    def check(self, num_targets: int, starts: Tensor, lengths: Tensor, chunk_size: int) -> list[str]:
        """Every violation of the score-first rules; empty when the run was honest.

        Checks: each position scored exactly once; every trained position scored before; no document's last
        chunk trained on by its LoRA; every document a global phase touches fully scored before the phase.
        """
        problems: list[str] = []
        scored = torch.zeros(num_targets, dtype=torch.int64)
        doc_of = torch.repeat_interleave(torch.arange(len(starts)), lengths)
        for kind, doc, pos in self.events:
            if kind == "score":
                scored[pos] += 1
                continue
            if not bool((scored[pos] > 0).all()):
                problems.append(f"{kind} step (doc/phase {doc}) trained on {int((scored[pos] == 0).sum())} "
                                "positions before they were scored")
            if kind == "lora":
                last0 = int(starts[doc]) + (int(lengths[doc]) - 1) // chunk_size * chunk_size
                if bool((pos >= last0).any()):
                    problems.append(f"lora step trained on the last chunk of document {doc}")
            else:
                docs = torch.unique(doc_of[pos])
                for d in docs.tolist():
                    a, n = int(starts[d]), int(lengths[d])
                    if not bool((scored[a : a + n] > 0).all()):
                        problems.append(f"global phase {doc} trained on document {d} before it was fully scored")
        if bool((scored > 1).any()):
            problems.append(f"{int((scored > 1).sum())} positions scored more than once")
        if bool((scored == 0).any()):
            problems.append(f"{int((scored == 0).sum())} positions never scored")
        return problems


def prefix_violations(a: ScoreRecorder, b: ScoreRecorder, t: int) -> list[str]:
    """Invariant 1 checker: runs on two streams that differ only at token ``t`` must give identical distributions
    at every position predicting a token ``<= t`` (target indices ``< t``), for every variant.

    Args:
        a: Recorder (``keep_dists=True``) of the run on the original stream.
        b: Recorder of the run on the stream with token ``t`` changed.
        t: Index of the perturbed token.

    Returns:
        One line per variant and position whose distribution changed.
    """
    problems = []
    for variant in a.variants():
        da, db = a.distributions(variant), b.distributions(variant)
        changed = [j for j in sorted(da) if j < t and not np.array_equal(da[j], db.get(j))]
        if changed:
            problems.append(f"{variant}: distributions before token {t} changed at positions {changed[:5]}")
    return problems

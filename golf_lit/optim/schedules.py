"""Pure schedule functions: the warmdown lr multipliers and the Muon momentum ramp (docs/record-stack.md §7, §6.1).

``lr_multiplier`` and ``muon_momentum`` follow the record line's train_gpt.py (parameter-golf PR #638 -> #761):
no lr warm-up, a linear warmdown to 0 that ends exactly at the wall-clock cap, and a linear momentum warm-up.
``warmdown_frac_multiplier`` is the leaderboard top's fraction-of-budget warmdown with a floor
(docs/top-stack.md §4.3).
"""

from __future__ import annotations


def lr_multiplier(
    step: int, elapsed_ms: float, *, warmdown_iters: int, iterations: int, max_wallclock_ms: float | None
) -> float:
    """Learning-rate multiplier applied to every group's base lr.

    With a wall-clock cap, the warmdown length in time is ``warmdown_iters`` times the running mean step
    time ``elapsed_ms / max(step, 1)``; the multiplier is 1 until the remaining time drops below it, then
    ``remaining / warmdown_ms``, reaching 0 at the cap. Without a cap it decays linearly over the last
    ``warmdown_iters`` of ``iterations`` steps (and, like the seed, is 1 again at steps >= iterations, which
    never run).

    Args:
        step: Optimizer steps completed so far.
        elapsed_ms: Training time so far (validation and compile priming excluded).
        warmdown_iters: Warmdown length in steps; <= 0 disables the warmdown.
        iterations: Step budget (used only without a cap).
        max_wallclock_ms: Training-time cap; None or <= 0 means no cap (step-based fallback).

    Returns:
        The multiplier in [0, 1].
    """
    if warmdown_iters <= 0:
        return 1.0
    if max_wallclock_ms is None or max_wallclock_ms <= 0:
        if iterations - warmdown_iters <= step < iterations:
            return max((iterations - step) / max(warmdown_iters, 1), 0.0)
        return 1.0
    step_ms = elapsed_ms / max(step, 1)
    warmdown_ms = warmdown_iters * step_ms
    remaining_ms = max(max_wallclock_ms - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0


def warmdown_frac_multiplier(frac: float, *, warmdown_frac: float, min_lr: float = 0.0) -> float:
    """Learning-rate multiplier of the leaderboard top: a warmdown over a fraction of the budget, with a floor.

    Origin: WARMDOWN_FRAC from the record line's later scripts, MIN_LR from record 0423-PolarNS (PR #1787);
    docs/top-stack.md §4.3. ``m = 1`` while ``frac < 1 - warmdown_frac``, then ``(1 - frac) / warmdown_frac``
    (linear, reaching 0 at ``frac = 1``), never below ``min_lr``.

    Args:
        frac: Fraction of the training budget used so far (``training_ms / budget_ms``, or ``step / max_steps``).
        warmdown_frac: Fraction of the budget the warmdown covers, in (0, 1]; 0 disables the warmdown.
        min_lr: Floor of the multiplier (top: 0.1).

    Returns:
        The multiplier in [min_lr, 1] (1 before the warmdown; the floor also holds past ``frac = 1``).
    """
    if warmdown_frac <= 0 or frac < 1.0 - warmdown_frac:
        return 1.0
    return max((1.0 - frac) / warmdown_frac, min_lr)


def muon_momentum(step: int, *, start: float, end: float, warmup_steps: int) -> float:
    """Muon momentum ramped linearly from ``start`` to ``end`` over ``warmup_steps`` steps.

    Args:
        step: Optimizer steps completed so far.
        start: Momentum at step 0.
        end: Momentum from ``warmup_steps`` on.
        warmup_steps: Ramp length; <= 0 gives ``end`` at once.

    Returns:
        ``(1 - f) * start + f * end`` with ``f = min(step / warmup_steps, 1)``.
    """
    frac = min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    return (1 - frac) * start + frac * end

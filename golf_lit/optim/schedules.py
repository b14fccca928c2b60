"""Pure schedule functions: the wall-clock warmdown lr multiplier and the Muon momentum ramp (SPEC §7, §6.1).

Both follow the record line's train_gpt.py (parameter-golf PR #638 -> #761): no lr warm-up, a linear
warmdown to 0 that ends exactly at the wall-clock cap, and a linear momentum warm-up.
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

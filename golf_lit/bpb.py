"""Loss and bits per byte from float64 sums (docs/record-stack.md §3); torch-free, so a packed scorer needs no
torchmetrics."""

from __future__ import annotations

import math


def bpb_from_sums(nll_sum: float, token_count: float, byte_count: float) -> tuple[float, float]:
    """``(val_loss, val_bpb)`` from summed NLL (nats), token and byte counts.

    ``val_loss = nll_sum / tokens``; ``val_bpb = nll_sum / (ln 2 * bytes)``.
    """
    if token_count <= 0 or byte_count <= 0:
        raise ValueError(f"cannot compute bpb from {token_count} tokens and {byte_count} bytes")
    return nll_sum / token_count, nll_sum / (math.log(2.0) * byte_count)

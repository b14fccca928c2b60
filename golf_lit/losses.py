"""Losses on logits: per-token NLL (for evaluation) and the mean training loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-token negative log-likelihood in nats, computed in fp32.

    Args:
        logits: (..., V) logits (already softcapped by the model).
        targets: (...) target ids.

    Returns:
        fp32 tensor of the targets' shape.
    """
    flat = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), reduction="none")
    return flat.reshape(targets.shape)


def mean_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over all positions in fp32 (the training loss, SPEC §4.1 step 6)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))

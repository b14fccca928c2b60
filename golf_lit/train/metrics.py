"""Exact bits per byte (docs/record-stack.md §3) as a torchmetrics Metric with float64 sums and sum reduction."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from golf_lit.bpb import bpb_from_sums  # noqa: F401  (moved; imported from here by existing code)
from golf_lit.data.byte_source import ByteSource, SidecarBytes
from golf_lit.data.tokenizer import ByteLUTs


class BitsPerByte(Metric):
    """Accumulates NLL, token and byte counts in float64; ``compute()`` returns val_loss and val_bpb.

    Across processes the three sums are added (``dist_reduce_fx="sum"``) and converted once.

    Args:
        luts: The byte source (``golf_lit.data.byte_source``): the tokenizer's byte tables, or the CaseOps byte
            sidecar, in which case every update must pass ``nbytes``. Kept as a plain attribute (not buffers), so
            DDP does not try to broadcast it; LUTs are copied to the device of the first update.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, luts: ByteSource, **kwargs) -> None:
        super().__init__(**kwargs)
        self._luts = luts
        for name in ("nll_sum", "token_count", "byte_count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def luts_on(self, device: torch.device) -> ByteLUTs:
        """The byte tables on ``device`` (copied once per device)."""
        if self._luts.base_bytes.device != device:
            self._luts = self._luts.to(device)
        return self._luts

    def update(self, nll: Tensor, prev_ids: Tensor, target_ids: Tensor, nbytes: Tensor | None = None) -> None:
        """Add scored positions.

        Args:
            nll: Per-token NLL in nats (any shape).
            prev_ids: The input token at each scored position (same shape).
            target_ids: The scored target token (same shape).
            nbytes: Original bytes of each target (same shape), from the byte source; required with a sidecar,
                else computed from the LUTs.
        """
        if nbytes is None:
            if isinstance(self._luts, SidecarBytes):
                raise ValueError("BitsPerByte: with a CaseOps byte sidecar every update needs nbytes (the batch's "
                                 "third element from the data module)")
            nbytes = self.luts_on(target_ids.device).token_bytes(prev_ids, target_ids)
        self.nll_sum += nll.detach().to(torch.float64).sum()
        self.token_count += float(target_ids.numel())
        self.byte_count += nbytes.to(device=self.byte_count.device, dtype=torch.float64).sum()

    def compute(self) -> dict[str, Tensor]:
        """``{"val_loss", "val_bpb"}`` as float64 tensors."""
        loss = self.nll_sum / self.token_count
        return {"val_loss": loss, "val_bpb": self.nll_sum / (math.log(2.0) * self.byte_count)}

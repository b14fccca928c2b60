"""Muon: momentum SGD whose update is orthogonalized by a Newton-Schulz iteration (docs/record-stack.md §6.1).

Origin: Keller Jordan, modded-nanogpt and the "Muon: An optimizer for hidden layers" blog post.

Why not ``torch.optim.Muon``: it keeps the momentum buffer as an EMA, ``buf = mu*buf + (1-mu)*g``, and
mixes ``(1-mu)*g + mu*buf`` for Nesterov. At a fixed momentum that is the seed's update times (1 - mu), which
the Frobenius normalization removes, but under the record's momentum ramp (0.92 -> 0.99) the two buffers
weight past gradients differently. tests/test_muon.py shows both facts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
"""Quintic Newton-Schulz coefficients (a, b, c) tuned for a steep slope at zero (modded-nanogpt)."""

# Polar Express (Amsel et al. 2025; parameter-golf PR #1344, adopted in record 0423-PolarNS, PR #1787):
# one (a, b, c) per iteration, applied in this order (docs/top-stack.md §4.2).
POLAR_EXPRESS_COEFFICIENTS: tuple[tuple[float, float, float], ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
"""Per-iteration Newton-Schulz coefficients (a_k, b_k, c_k) of the leaderboard top, k = 1..5."""

Coefficients = tuple[float, float, float] | tuple[tuple[float, float, float], ...]
"""One (a, b, c) for every iteration, or one per iteration."""

NS_COEFFICIENT_SETS: dict[str, Coefficients] = {
    "fixed": NS_COEFFICIENTS,
    "polar_express": POLAR_EXPRESS_COEFFICIENTS,
}
"""The values of ``OptimConfig.ns_coefficients`` and the coefficients each selects."""


def ns_schedule(coefficients: Coefficients, steps: int) -> list[tuple[float, float, float]]:
    """The (a, b, c) of each of ``steps`` Newton-Schulz iterations.

    A single triple is used for every iteration. A sequence of triples is applied in order; with more
    iterations than triples the last triple is repeated. (The top record's code runs only its 5 Polar
    Express triples whatever the step count while its comment says the last one is repeated, docs/top-stack.md
    §10.13; golf-lit does what the comment says, so ``steps`` always means steps. Both run the same 5 iterations
    at the record's 5 steps.)

    Args:
        coefficients: One (a, b, c) triple, or a sequence of them.
        steps: Number of iterations.

    Returns:
        A list of ``steps`` triples.
    """
    if not per_iteration(coefficients):
        return [tuple(coefficients)] * steps  # type: ignore[list-item]
    triples = [tuple(t) for t in coefficients]
    if not triples or any(len(t) != 3 for t in triples):
        raise ValueError(f"Newton-Schulz coefficients must be (a, b, c) or a sequence of them, got {coefficients!r}")
    return [triples[min(k, len(triples) - 1)] for k in range(steps)]  # type: ignore[misc]


NS_DTYPES = ("bf16", "fp32", "auto")
"""Values of ``Muon(ns_dtype=...)`` / ``optim.muon_ns_dtype``."""


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (oneDNN with AVX512-BF16 or AMX).

    Without it torch emulates bf16 matmuls, and on the smoke model Newton-Schulz in bf16 then costs about
    20x the fp32 iteration (216 ms vs 10 ms per step measured with ``ONEDNN_MAX_CPU_ISA=AVX2``).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_ns_dtype(ns_dtype: str, device: torch.device) -> torch.dtype:
    """The dtype Newton-Schulz runs in: ``"auto"`` is bf16 except on a CPU without native bf16 (then fp32).

    The record's math (bf16, docs/record-stack.md §6.1) is kept on every GPU and on CPUs with native bf16.
    """
    if ns_dtype not in NS_DTYPES:
        raise ValueError(f"Muon ns_dtype must be one of {NS_DTYPES}, got {ns_dtype!r}")
    if ns_dtype == "fp32" or (ns_dtype == "auto" and device.type == "cpu" and not cpu_has_native_bf16()):
        return torch.float32
    return torch.bfloat16


def per_iteration(coefficients: Coefficients) -> bool:
    """Whether ``coefficients`` is a sequence of per-iteration triples (Polar Express) rather than one triple."""
    return not (len(coefficients) == 3 and all(isinstance(v, (int, float)) for v in coefficients))


def zeropower_newton_schulz(
    g: Tensor,
    steps: int = 5,
    eps: float = 1e-7,
    coefficients: Coefficients = NS_COEFFICIENTS,
    dtype: torch.dtype = torch.bfloat16,
    square_first: bool | None = None,
) -> Tensor:
    """Approximately orthogonalize a matrix with a quintic Newton-Schulz iteration (in bf16 by default).

    The singular vectors of ``g`` are kept and, for 5 steps with the fixed coefficients, every singular value
    above about 0.0015 * ||g||_F lands in about [0.67, 1.15] (not exactly 1: the coefficients trade accuracy
    for speed).

    Args:
        g: 2-D tensor (any float dtype).
        steps: Number of iterations.
        eps: Added to the Frobenius norm before normalizing.
        coefficients: (a, b, c) of ``X <- a*X + (b*A + c*A@A) @ X`` with ``A = X @ X.T``, or one triple per
            iteration (see ``ns_schedule``).
        dtype: Working dtype (bf16 in training; float64 lets tests check the arithmetic exactly).
        square_first: Grouping of the quintic term: True computes ``c * (A @ A)`` (the leaderboard top's Polar
            Express code, 0423-PolarNS), False ``(c * A) @ A`` (the seed's ``c * A @ A``, Python's left-to-right
            reading). The two differ only by rounding: nothing in fp64, a few % per call in bf16. None (default)
            groups each coefficient set as its source does: one triple as the seed, per-iteration triples as the
            top (docs/top-stack.md §4.2).

    Returns:
        A tensor of ``dtype`` with the shape of ``g``.
    """
    if g.ndim != 2:
        raise ValueError(f"Newton-Schulz needs a 2-D matrix, got shape {tuple(g.shape)}")
    schedule = ns_schedule(coefficients, steps)
    if square_first is None:
        square_first = per_iteration(coefficients)
    x = g.to(dtype)
    x = x / (x.norm() + eps)
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the wide orientation so A = X X^T is the smaller Gram matrix
        x = x.T
    for a, b, c in schedule:
        gram = x @ x.T
        quintic = c * (gram @ gram) if square_first else (c * gram) @ gram
        x = a * x + (b * gram + quintic) @ x
    return x.T if tall else x


def row_normalize(g: Tensor, floor: float = 1e-7) -> Tensor:
    """Divide every row of ``g`` by its L2 norm, clamped below at ``floor`` (MuonEq-R).

    Origin: parameter-golf PR #1217, record 0403-EqR (docs/top-stack.md §4.2).
    """
    return g / g.norm(dim=-1, keepdim=True).clamp_min(floor)


class Muon(torch.optim.Optimizer):
    """Muon optimizer for 2-D weight matrices, exactly as the record uses it (docs/record-stack.md §6.1).

    Per parameter W with gradient G: ``buf = mu*buf + G`` (zero init); Nesterov ``G' = G + mu*buf``;
    ``X = NS(G')`` in bf16 scaled by ``sqrt(max(1, rows/cols))``; then ``W *= 1 - lr*wd`` and
    ``W -= lr * X``. Group keys ``lr`` and ``momentum`` may be rewritten every step (schedules).

    Leaderboard-top options (docs/top-stack.md §4.2), both off by default: ``ns_coefficients="polar_express"``
    uses one (a, b, c) per Newton-Schulz iteration, and ``row_normalize=True`` (MuonEq-R) divides every row of
    ``G'`` by its L2 norm (floor 1e-7) before orthogonalizing. The momentum buffer is never normalized.

    With ``shard_ns=True`` and an initialized process group, matrix i is orthogonalized only on rank
    i mod world_size and the bf16 updates are summed with one all-reduce (the seed's speed trick). The
    momentum buffers are still updated on every rank, so every rank's optimizer state is complete and
    the result equals the unsharded step (gradients must already be averaged across ranks, as DDP does).

    Args:
        params: Parameters or parameter groups (2-D tensors only).
        lr: Learning rate.
        momentum: Momentum mu.
        nesterov: Use the Nesterov form ``G + mu*buf`` instead of ``buf``.
        backend_steps: Newton-Schulz iterations.
        weight_decay: Decoupled weight decay.
        shard_ns: Shard the orthogonalization across ranks when torch.distributed is initialized.
        ns_coefficients: "fixed" (the record's single triple), "polar_express" (five per-iteration triples;
            more than 5 steps repeat the last one, see ``ns_schedule``), or explicit coefficients.
        row_normalize: MuonEq-R row normalization of ``G'`` before Newton-Schulz.
        ns_dtype: Newton-Schulz compute dtype: ``"bf16"`` (the record), ``"fp32"``, or ``"auto"`` (bf16 except
            on a CPU that emulates bf16, where fp32 is ~20x faster; GPU math is unchanged).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        *,
        lr: float = 0.025,
        momentum: float = 0.99,
        nesterov: bool = True,
        backend_steps: int = 5,
        weight_decay: float = 0.0,
        shard_ns: bool = False,
        ns_coefficients: str | Coefficients = "fixed",
        row_normalize: bool = False,
        ns_dtype: str = "bf16",
    ) -> None:
        if ns_dtype not in NS_DTYPES:
            raise ValueError(f"Muon ns_dtype must be one of {NS_DTYPES}, got {ns_dtype!r}")
        if lr < 0 or not 0 <= momentum < 1 or backend_steps < 1 or weight_decay < 0:
            raise ValueError(
                f"Muon: need lr >= 0, 0 <= momentum < 1, backend_steps >= 1, weight_decay >= 0; got lr={lr}, "
                f"momentum={momentum}, backend_steps={backend_steps}, weight_decay={weight_decay}"
            )
        if isinstance(ns_coefficients, str):
            if ns_coefficients not in NS_COEFFICIENT_SETS:
                raise ValueError(
                    f"Muon: ns_coefficients must be one of {sorted(NS_COEFFICIENT_SETS)}, got {ns_coefficients!r}"
                )
            ns_coefficients = NS_COEFFICIENT_SETS[ns_coefficients]
        ns_schedule(ns_coefficients, backend_steps)  # validates the shape of explicit coefficients
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            backend_steps=backend_steps,
            weight_decay=weight_decay,
            ns_coefficients=ns_coefficients,
            row_normalize=row_normalize,
        )
        super().__init__(params, defaults)
        self.shard_ns = shard_ns
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon only takes 2-D parameters, got one of shape {tuple(p.shape)}")

    def _direction(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        """Momentum + Nesterov input to Newton-Schulz for one parameter (updates its buffer)."""
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        buf = state["momentum_buffer"]
        buf.mul_(group["momentum"]).add_(p.grad)
        return p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf

    def _update(self, p: Tensor, direction: Tensor, group: dict[str, Any]) -> Tensor:
        """Orthogonalized, shape-scaled update for one parameter (bf16 unless ``ns_dtype`` says otherwise)."""
        if group.get("row_normalize", False):  # .get: groups restored from checkpoints older than the option
            direction = row_normalize(direction)
        coefficients = group.get("ns_coefficients", NS_COEFFICIENTS)
        dtype = resolve_ns_dtype(self.ns_dtype, direction.device)
        x = zeropower_newton_schulz(direction, steps=group["backend_steps"], coefficients=coefficients, dtype=dtype)
        return x * math.sqrt(max(1.0, p.size(0) / p.size(1)))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor | None:
        """Perform one optimization step.

        Args:
            closure: Optional callable that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sharded = self.shard_ns and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        rank, world = (dist.get_rank(), dist.get_world_size()) if sharded else (0, 1)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            directions = [self._direction(p, group) for p in params]
            if sharded:
                dtype = resolve_ns_dtype(self.ns_dtype, params[0].device)
                flat = torch.zeros(sum(p.numel() for p in params), dtype=dtype, device=params[0].device)
                updates, offset = [], 0
                for i, (p, d) in enumerate(zip(params, directions)):
                    view = flat[offset : offset + p.numel()].view_as(p)
                    if i % world == rank:
                        view.copy_(self._update(p, d, group))
                    updates.append(view)
                    offset += p.numel()
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            else:
                updates = [self._update(p, d, group) for p, d in zip(params, directions)]
            lr, wd = group["lr"], group["weight_decay"]
            for p, u in zip(params, updates):
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(u.to(p.dtype), alpha=-lr)
        return loss

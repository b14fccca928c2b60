"""GPTQ calibration: input Hessians of every quantized matrix from training batches (docs/top-stack.md §5.1).

Forward pre-hooks on ``nn.Linear`` modules see each call's input, so a layer run several times per pass (depth
recurrence) accumulates once per call, and any new module a model option adds is covered as long as it is an
``nn.Linear``. A tied embedding used as the output head has no module call of its own: the head input (the
final-norm output) is caught by a ``TorchFunctionMode`` watching ``F.linear`` for the embedding weight (or a
``.to()`` copy of it). Origin of the procedure: 0329-GPTQ (PRs #634/#1019).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from golf_lit.data.shards import TokenStream


def calibration_batches(
    train_files: str, num_batches: int, batch_tokens: int, seq_len: int, start: int = 0
) -> Iterator[Tensor]:
    """Input ids of ``num_batches`` TRAINING micro-batches (``batch_tokens`` tokens each, rows of ``seq_len``).

    Args:
        train_files: Glob of training shards (never the validation files: calibration is training time).
        num_batches: Number of batches.
        batch_tokens: Tokens per batch (a multiple of ``seq_len``).
        seq_len: Sequence length.
        start: Index of the first micro-batch in the training stream.
    """
    stream = TokenStream(train_files)
    for i in range(num_batches):
        yield stream.micro_batch(start + i, batch_tokens, seq_len)[0]


def calibrate(model: nn.Module, train_files: str, cfg: Any, seq_len: int) -> dict[str, Tensor]:
    """Hessians of every matrix the quantizer sends through GPTQ, from ``cfg.gptq_calibration_batches`` training
    batches of ``cfg.gptq_calibration_tokens`` tokens (rounded down to whole ``seq_len`` rows).

    Args:
        model: The trained model.
        train_files: Glob of training shards (resolved).
        cfg: The QuantConfig.
        seq_len: Rows of the calibration batches.
    """
    from golf_lit.artifact.quantize import matrix_bits

    names = {n for n, t in model.state_dict().items() if t.ndim == 2 and matrix_bits(n, (), cfg) is not None}
    tokens = max(seq_len, cfg.gptq_calibration_tokens // seq_len * seq_len)
    return collect_hessians(model, calibration_batches(train_files, cfg.gptq_calibration_batches, tokens, seq_len), names)  # noqa: E501


class _TiedHeadMode(TorchFunctionMode):
    """Adds ``X^T X`` of every ``F.linear(X, W)`` whose ``W`` is a watched embedding weight (or a copy of it)."""

    def __init__(self, watched: dict[str, Tensor], sums: dict[str, Tensor]) -> None:
        super().__init__()
        self.alias: dict[int, tuple[str, Tensor]] = {id(t): (k, t) for k, t in watched.items()}
        self.sums = sums

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (Tensor.to, Tensor.type, Tensor.type_as, Tensor.float, Tensor.bfloat16, Tensor.half):
            hit = self.alias.get(id(args[0])) if args else None
            if hit is not None and isinstance(out, Tensor):
                self.alias[id(out)] = (hit[0], out)  # keeps `out` alive while its id is a key
        elif func is F.linear:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            hit = self.alias.get(id(weight))
            if hit is not None:
                _accumulate(self.sums, hit[0], args[0])
        return out


def _accumulate(sums: dict[str, Tensor], key: str, x: Tensor) -> None:
    x = x.detach().reshape(-1, x.shape[-1]).float()
    xtx = x.T @ x
    if key in sums:
        sums[key] += xtx
    else:
        sums[key] = xtx


@torch.no_grad()
def collect_hessians(
    model: nn.Module, batches: Iterable[Tensor], names: Collection[str] | None = None
) -> dict[str, Tensor]:
    """``H = sum X^T X / #batches`` (fp32) for each watched weight, from the model's forward on ``batches``.

    Args:
        model: The trained model (put in eval mode for the pass, restored after; looping switched on when the
            model has ``set_looping``, as at evaluation).
        batches: Input-id tensors (B, T), training data only.
        names: State-dict names of the weights to watch (default: every ``nn.Linear`` weight and every tied
            embedding). A tied embedding is watched when its name is listed or ``names`` is None.

    Returns:
        Weight name -> Hessian (in_features x in_features) on the CPU.
    """
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper: hook the eager modules (names match)
    sums: dict[str, Tensor] = {}
    handles = []
    for mod_name, module in model.named_modules():
        key = f"{mod_name}.weight" if mod_name else "weight"
        if isinstance(module, nn.Linear) and (names is None or key in names):
            handles.append(module.register_forward_pre_hook(lambda _m, inp, key=key: _accumulate(sums, key, inp[0])))
    watched = {
        f"{mod_name}.weight": module.weight
        for mod_name, module in model.named_modules()
        if isinstance(module, nn.Embedding) and (names is None or f"{mod_name}.weight" in names)
    }
    was_training = model.training
    looping = getattr(model, "looping_active", None)
    model.eval()
    if looping is not None:
        model.set_looping(True)
    device = next(model.parameters()).device
    autocast: Any = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    n = 0
    try:
        with _TiedHeadMode(watched, sums), autocast:
            for ids in batches:
                model(ids.to(device))
                n += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        if looping is not None:
            model.set_looping(looping)
    if n == 0:
        raise ValueError("gptq: no calibration batches")
    return {k: (v / n).cpu() for k, v in sums.items()}

"""Per-document LoRA adapters on a model's own modules, through forward hooks (phased TTT, docs/top-stack.md §6.2).

Origin: batched per-document LoRA TTT (record 2026-04-10 VarLen, PR #1530); alpha / warm-start A (PR #1767).

Targets: Q, K, V on ``*.attn.c_q/c_k/c_v`` (their input -> added to their output); "o" reads the attention
module's input and adds to its output; "mlp" reads the MLP input and adds to its output; "head" reads the
final normalized hidden state through the model's declared hook point (``golf_lit.model.gpt.HeadTap``) and adds
to the logits before the softcap, as the record does. The adapted forward therefore IS the model's forward plus
these terms: every model option (looping, parallel residuals, gates) acts identically, and with B = 0 the
logits are the model's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from golf_lit.model.gpt import HeadTap

TARGETS = ("q", "k", "v", "o", "mlp", "head")
"""The projections that can get adapters."""


class BatchedLoRA(nn.Module):
    """One LoRA per document along a batch axis: ``x (R, T, in) -> scale * x A[:R]^T B[:R]^T``."""

    def __init__(self, batch: int, in_features: int, out_features: int, rank: int, scale: float) -> None:
        super().__init__()
        self.in_features, self.scale = in_features, scale
        self.A = nn.Parameter(torch.empty(batch, rank, in_features))
        self.B = nn.Parameter(torch.zeros(batch, out_features, rank))

    def reset(self, generator: torch.Generator | None, keep_a: bool) -> None:
        """B = 0; A ~ U(+-1/sqrt(in)) unless ``keep_a``."""
        with torch.no_grad():
            self.B.zero_()
            if not keep_a:
                bound = 1.0 / math.sqrt(self.in_features)
                a = torch.rand(self.A.shape, generator=generator) * (2 * bound) - bound
                self.A.copy_(a.to(self.A.device))

    def forward(self, x: Tensor) -> Tensor:
        r = x.size(0)
        h = torch.bmm(x.reshape(r, -1, x.size(-1)), self.A[:r].transpose(1, 2).to(x.dtype))
        out = torch.bmm(h, self.B[:r].transpose(1, 2).to(x.dtype)) * self.scale
        return out.reshape(*x.shape[:-1], out.size(-1))


def _first_input(args: tuple, kwargs: dict) -> Tensor:
    return args[0] if args else next(iter(kwargs.values()))


class LoRAHooks:
    """Per-document LoRA adapters attached to a model's own modules through forward hooks.

    While :attr:`active` is False (or after :meth:`remove`) the model computes exactly its plain forward.

    Args:
        model: The model (modules found by name: ``*.attn.c_q/c_k/c_v``, ``*.attn``, ``*.mlp``, and its
            :class:`~golf_lit.model.gpt.HeadTap`).
        rank: LoRA rank.
        alpha: Output scale ``alpha / rank``.
        targets: Subset of :data:`TARGETS`.
        batch: Documents per batch (the adapters' batch axis).
    """

    def __init__(self, model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...], batch: int) -> None:
        self.rank, self.scale, self.batch = rank, alpha / rank, batch
        self.adapters = nn.ModuleDict()
        self.handles: list = []
        self.active = True
        targets = set(targets)
        device = next(model.parameters()).device
        for name, module in model.named_modules():
            parts = name.split(".")
            key = name.replace(".", "_")
            if len(parts) >= 2 and parts[-2] == "attn" and parts[-1] in ("c_q", "c_k", "c_v") \
                    and parts[-1][-1] in targets and isinstance(module, nn.Linear):
                self._add(key, module, module.in_features, module.out_features, "linear")
            elif parts[-1] == "attn" and "o" in targets and hasattr(module, "proj"):
                self._add(key, module, module.proj.in_features, module.proj.out_features, "pair")
            elif parts[-1] == "mlp" and "mlp" in targets and hasattr(module, "fc"):
                self._add(key, module, module.fc.in_features, module.proj.out_features, "linear")
            elif isinstance(module, HeadTap) and "head" in targets:
                self._add("head", module, module.in_features, module.out_features, "head")
        if "head" in targets and "head" not in self.adapters:
            raise ValueError("phased_ttt.lora_targets: 'head' needs a model with a HeadTap hook point "
                             "(golf_lit.model.gpt.GPT.head_tap)")
        if not len(self.adapters):
            raise ValueError(f"phased_ttt.lora_targets: no module of the model matches {sorted(targets)}")
        self.adapters.to(device)

    def _add(self, key: str, module: nn.Module, fin: int, fout: int, kind: str) -> None:
        lora = BatchedLoRA(self.batch, fin, fout, self.rank, self.scale)
        self.adapters[key] = lora

        def hook(mod, args, kwargs, out):
            if not self.active:
                return None
            if kind == "head":  # HeadTap(logits, hidden): the adapter reads the hidden state, adds to the logits
                hidden = args[1] if len(args) > 1 else kwargs["hidden"]
                return out + lora(hidden).to(out.dtype)
            delta = lora(_first_input(args, kwargs))
            if kind == "pair":  # attention returns (out, raw_v)
                return (out[0] + delta.to(out[0].dtype), *out[1:])
            return out + delta.to(out.dtype)

        self.handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def reset(self, batch_index: int, seed: int, keep_a: bool) -> None:
        """Fresh adapters for a batch (A drawn from a generator seeded by the batch index)."""
        gen = torch.Generator().manual_seed(seed * 1_000_003 + batch_index)
        for lora in self.adapters.values():
            lora.reset(gen, keep_a)

    def parameters(self) -> list[nn.Parameter]:
        """The adapters' parameters."""
        return list(self.adapters.parameters())

    def remove(self) -> None:
        """Detach every hook (the model is then exactly the plain model again)."""
        for h in self.handles:
            h.remove()
        self.handles = []

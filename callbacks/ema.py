"""``EMA``: an fp32 exponential moving average of the weights, swapped in when training ends (SPEC §8)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class EMA(Callback):
    """Keeps ``ema <- decay * ema + (1 - decay) * w`` for every weight after every optimizer step.

    Like the seed (record 2026-03-20 XSA4+EMA lineage): the shadow is fp32, starts from the initial weights
    (no bias correction), validation during training sees the live weights, and the EMA weights replace
    the live ones in ``on_train_end`` (so a later ``ArtifactExport`` exports them). The shadow is saved in
    checkpoints. Lightning's ``EMAWeightAveraging`` is not used: it starts from the first step's weights and
    validates with the average, which would change the recipe.

    Args:
        decay: EMA decay per optimizer step (record: 0.997, a horizon of ~333 steps).

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: callbacks.EMA
              init_args: {decay: 0.997}
    """

    def __init__(self, decay: float = 0.997) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA.decay: must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] | None = None
        self._loaded: dict[str, torch.Tensor] | None = None
        self.applied = False

    @staticmethod
    def _params(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        return dict(pl_module.gpt.named_parameters())

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = self._params(pl_module)
        source = self._loaded if self._loaded is not None else {k: p.detach() for k, p in params.items()}
        self.shadow = {k: source[k].to(device=p.device, dtype=torch.float32).clone() for k, p in params.items()}
        self._loaded = None

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        params = self._params(pl_module)
        shadow = [self.shadow[k] for k in params]
        current = [p.detach().float() for p in params.values()]
        torch._foreach_mul_(shadow, self.decay)
        torch._foreach_add_(shadow, current, alpha=1.0 - self.decay)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.apply_to(pl_module)

    def apply_to(self, pl_module: L.LightningModule) -> None:
        """Copy the EMA weights into the model (cast to each parameter's dtype)."""
        if self.shadow is None or self.applied:
            return
        with torch.no_grad():
            for k, p in self._params(pl_module).items():
                p.copy_(self.shadow[k].to(p.dtype))
        self.applied = True

    @override
    def state_dict(self) -> dict[str, Any]:
        shadow = {k: v.detach().cpu() for k, v in self.shadow.items()} if self.shadow is not None else None
        return {"decay": self.decay, "shadow": shadow}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict.get("shadow")

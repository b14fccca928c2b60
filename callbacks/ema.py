"""``EMA``: an fp32 exponential moving average of the weights, swapped in when training ends
(docs/record-stack.md §8)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from golf_lit.train.checkpoint import EMA_STATE_KEY, copy_weights_into, ema_weights_from_checkpoint


class EMA(Callback):
    """Keeps ``ema <- decay * ema + (1 - decay) * w`` for every weight after every optimizer step.

    Like the seed (record 2026-03-20 XSA4+EMA lineage): the shadow is fp32, starts from the initial weights
    (no bias correction), validation during training sees the live weights, and the EMA weights replace
    the live ones in ``on_train_end``. ``ArtifactExport`` calls :meth:`apply_to` itself, so it exports the EMA
    weights whichever order the two callbacks are listed in. The shadow is saved in checkpoints under the key
    ``EMA`` (:meth:`averaged_state_dict_from_checkpoint` reads it back, e.g. for ``golf-lit export``).
    Lightning's ``EMAWeightAveraging`` is not used: it starts from the first step's weights and validates with
    the average, which would change the recipe.

    Args:
        decay: EMA decay per optimizer step (record: 0.997, a horizon of ~333 steps).

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: golf_lit.callbacks.EMA
              init_args: {decay: 0.997}
    """

    def __init__(self, decay: float = 0.997) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA.decay: must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] | None = None
        self._loaded: dict[str, torch.Tensor] | None = None
        self.applied = False

    STATE_KEY = EMA_STATE_KEY
    """Key of this callback's state in a checkpoint's ``callbacks`` dict (one EMA per trainer)."""

    @property
    @override
    def state_key(self) -> str:
        return self.STATE_KEY

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
        """Copy the EMA weights into ``pl_module.gpt`` (cast to each parameter's dtype); only the first call acts.

        A run resumed from a checkpoint written at its end trains no step: the checkpoint's averages are used.
        """
        source = self.shadow if self.shadow is not None else self._loaded
        if source is None or self.applied:
            return
        self.copy_into(pl_module.gpt, source)
        self.applied = True

    def averaged_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The averaged weights (fp32, on CPU) by parameter name of ``pl_module.gpt``; None before training starts."""
        source = self.shadow if self.shadow is not None else self._loaded
        return {k: v.detach().cpu().clone() for k, v in source.items()} if source is not None else None

    @classmethod
    def averaged_state_dict_from_checkpoint(cls, checkpoint: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        """The averaged weights stored in a Lightning checkpoint dict (None when it was trained without EMA)."""
        return ema_weights_from_checkpoint(checkpoint)

    @staticmethod
    def copy_into(model: torch.nn.Module, averaged: dict[str, torch.Tensor]) -> None:
        """Copy ``averaged`` weights into ``model``'s parameters (each cast to the parameter's dtype and device).

        Raises:
            ValueError: The names differ from the model's parameters.
        """
        copy_weights_into(model, averaged)

    @override
    def state_dict(self) -> dict[str, Any]:
        shadow = {k: v.detach().cpu() for k, v in self.shadow.items()} if self.shadow is not None else None
        return {"decay": self.decay, "shadow": shadow}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict.get("shadow")

"""``CompilePriming``: real steps before the clock starts, then everything restored (docs/record-stack.md §7)."""

from __future__ import annotations

import copy

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class CompilePriming(Callback):
    """Runs ``warmup_steps`` real optimizer steps before training so torch.compile and the kernels warm up.

    Afterwards the weights and every optimizer state are restored to their values before priming. The
    data position needs no restoring: training batches are addressed by optimizer step, and priming reads steps
    0..N-1 through ``trainer.datamodule.step_batch(i)`` without touching the loader. It drives the module only
    through ``GolfLM``'s declared interface (``lightning_optimizers``, ``accumulate_gradients``,
    ``optimizer_step_all``, ``lr_multiplier``, ``gpt``).
    ``trainer.global_step`` is not advanced and the ``WallClockLimit`` clock has not started yet.

    Args:
        warmup_steps: Priming steps (record: 20); 0 disables priming.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: golf_lit.callbacks.CompilePriming
              init_args: {warmup_steps: 20}
    """

    def __init__(self, warmup_steps: int = 20) -> None:
        if warmup_steps < 0:
            raise ValueError(f"CompilePriming.warmup_steps: must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.warmup_steps == 0:
            return
        dm = trainer.datamodule
        optimizers = [o.optimizer for o in pl_module.lightning_optimizers()]
        weights = {k: v.detach().clone() for k, v in pl_module.gpt.state_dict().items()}
        states = [copy.deepcopy(o.state_dict()) for o in optimizers]
        multiplier = pl_module.lr_multiplier
        # depth recurrence: warm the plain and the looped graph (docs/top-stack.md §4.6)
        forms = pl_module.compile_forms()
        current = pl_module.compile_form()
        with trainer.precision_plugin.train_step_context():
            for form in forms:
                pl_module.set_compile_form(form)
                for i in range(self.warmup_steps):
                    pl_module.accumulate_gradients(*(t.to(pl_module.device) for t in dm.step_batch(i)))
                    pl_module.optimizer_step_all(i, count_step=False)
                    if i == 0 or i + 1 == self.warmup_steps:
                        trainer.print(f"warmup_step:{i + 1}/{self.warmup_steps}" + (" looped" if form else ""))
        pl_module.set_compile_form(current)
        with torch.no_grad():
            pl_module.gpt.load_state_dict(weights, strict=True)
        for opt, state in zip(optimizers, states):
            opt.load_state_dict(state)
            opt.zero_grad(set_to_none=True)
        pl_module.lr_multiplier = multiplier

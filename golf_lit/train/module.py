"""``GolfLM``: the LightningModule that trains the record GPT with Muon + AdamW (docs/record-stack.md §6, §13.2).

Manual optimization: one ``training_step`` is one optimizer step over ``grad_accum`` micro-batches, then one
global gradient clip over all parameters and a step of every optimizer. EMA, the warmdown clock, the
wall-clock cap and export are callbacks (``callbacks/``), not part of this module.
"""

from __future__ import annotations

import lightning.pytorch as L
import torch
from torch.nn.parallel import DistributedDataParallel

from golf_lit.data.vocab import require_vocab_match
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.model.losses import token_nll
from golf_lit.optim.config import OptimConfig
from golf_lit.optim.muon import Muon
from golf_lit.optim.param_groups import build_optimizers
from golf_lit.optim.schedules import muon_momentum
from golf_lit.train.metrics import BitsPerByte


class GolfLM(L.LightningModule):
    """Trains the record GPT.

    Every ``ModelConfig`` field is an argument of this module too, so the CLI takes ``--model.xsa_last_n 4``.
    The saved hyperparameters are exactly these arguments (the model fields flat, ``optim`` as a dict and
    ``compile``), so ``GolfLM.load_from_checkpoint(path)`` rebuilds the module.

    Interface for callbacks (everything a ``golf_lit.callbacks`` callback may use; set in ``__init__``):

    - ``gpt``: the ``GPT`` being trained (its parameters are what EMA averages and export writes).
    - ``model_config`` / ``optim_config``: the resolved ``ModelConfig`` / ``OptimConfig``.
    - ``lr_multiplier``: learning-rate factor applied at the next optimizer step (set by ``Warmdown``).
    - ``last_train_loss``: mean loss of the last training step (a detached tensor; None before the first).
    - ``last_val``: ``(val_loss, val_bpb)`` of the last validation (None before the first).
    - ``lightning_optimizers()``, ``accumulate_gradients(*batch)``, ``optimizer_step_all(step, count_step)``:
      one optimizer step in pieces, ``batch`` being ``GolfDataModule.step_batch(step)`` (``CompilePriming`` runs
      uncounted steps with them).
    - ``compile_forms()``, ``compile_form()``, ``set_compile_form(form)``: the graph forms compile priming warms
      (plain and looped with depth recurrence), the current one, and how to switch between them.

    Args:
        optim: Optimizer settings (``--model.optim.matrix_lr`` ...); a dict of its fields is accepted too
            (that is how checkpoints store it).
        compile: Run the model through ``torch.compile(fullgraph=True, dynamic=False)``.
        model_fields: ``ModelConfig`` fields (record defaults).
    """

    def __init__(self, optim: OptimConfig = OptimConfig(), compile: bool = False, **model_fields) -> None:
        super().__init__()
        if isinstance(optim, dict):
            optim = OptimConfig(**optim)
        if isinstance(model_fields.get("model"), dict):  # checkpoints written before the flat layout
            model_fields = {**model_fields.pop("model"), **model_fields}
        self.automatic_optimization = False
        self.model_config = ModelConfig(**model_fields)
        self.optim_config = optim
        self.compile = compile
        self.save_hyperparameters({**self.model_config.to_dict(), "optim": optim.to_dict(), "compile": compile})
        self.gpt = GPT(self.model_config)
        # Depth recurrence trains plain until callbacks.LoopingSwitch (docs/top-stack.md §3.3); resumes restore it.
        self.gpt.set_looping(self.model_config.num_loops > 0 and self.model_config.enable_looping_at <= 0)
        self._forward = self.gpt
        self.val_metric: BitsPerByte | None = None
        self.lr_multiplier = 1.0
        self.max_seqlen: int | None = None  # longest attention segment of packed batches (from the data module)
        self.last_train_loss: torch.Tensor | None = None
        self.last_val: tuple[float, float] | None = None

    def configure_model(self) -> None:
        if self.compile and self._forward is self.gpt:
            # Not registered as a submodule: checkpoints keep the plain parameter names.
            object.__setattr__(self, "_forward", torch.compile(self.gpt, dynamic=False, fullgraph=True))

    def forward(
        self,
        input_ids: torch.Tensor,
        cu_seqlens: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        max_seqlen: int | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) of the (possibly compiled) GPT, or its mean NLL when ``targets`` is given.

        ``cu_seqlens``/``max_seqlen``: document packing (see ``GPT.forward``); pass the data's segment cap as
        ``max_seqlen`` so FlashAttention-3's varlen kernel is not scheduled for whole-row segments.
        """
        return self._forward(input_ids, cu_seqlens, targets, max_seqlen=max_seqlen)

    def compile_forms(self) -> list[bool]:
        """Looping states whose graphs compile priming warms: both with depth recurrence, else the current one."""
        return [False, True] if self.model_config.num_loops else [self.gpt.looping_active]

    def compile_form(self) -> bool:
        """The current one of ``compile_forms()``."""
        return self.gpt.looping_active

    def set_compile_form(self, form: bool) -> None:
        """Switch the GPT to one of ``compile_forms()``."""
        self.gpt.set_looping(form)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["looping_active"] = self.gpt.looping_active

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "looping_active" in checkpoint:
            self.gpt.set_looping(checkpoint["looping_active"])

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "luts", None) is not None:
            require_vocab_match(self.model_config.vocab_size, dm.vocab_size, dm.tokenizer_path)
            self.val_metric = BitsPerByte(dm.luts)
        if dm is not None and getattr(dm, "document_packing", False):
            self.max_seqlen = dm.max_segment_len

    def on_fit_start(self) -> None:
        cfg = self.model_config
        if cfg.num_loops and cfg.enable_looping_at > 0 and self._trainer is not None:
            if not any(getattr(cb, "drives_looping", False) for cb in self.trainer.callbacks):
                raise ValueError(
                    f"model.enable_looping_at={cfg.enable_looping_at} needs callbacks.LoopingSwitch in "
                    "trainer.callbacks (or set it to 0 to loop from the start)"
                )

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return build_optimizers(self.gpt, self.optim_config)

    def lightning_optimizers(self) -> list:
        """The optimizers as a list of Lightning wrappers (``.optimizer`` is the torch optimizer)."""
        optimizers = self.optimizers()
        return optimizers if isinstance(optimizers, list) else [optimizers]

    def _ddp_sync(self, enabled: bool) -> None:
        """Skip the gradient all-reduce on all but the last micro-batch (what DDP's no_sync does)."""
        wrapper = self.trainer.strategy.model if self._trainer is not None else None
        if isinstance(wrapper, DistributedDataParallel):
            wrapper.require_backward_grad_sync = enabled

    def accumulate_gradients(
        self, x: torch.Tensor, y: torch.Tensor, cu_seqlens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forward/backward every micro-batch of ``x``/``y`` (grad_accum, B, T); return the mean loss (detached).

        ``cu_seqlens`` (grad_accum, K) comes with document-packed batches (``GolfDataModule(document_packing=True)``).
        """
        n = x.size(0)
        total = torch.zeros((), device=x.device)
        for m in range(n):
            self._ddp_sync(m == n - 1)
            seg = None if cu_seqlens is None else cu_seqlens[m]
            loss = self(x[m], seg, targets=y[m], max_seqlen=None if seg is None else self.max_seqlen)
            self.manual_backward(loss / n)
            total += loss.detach()
        self._ddp_sync(True)
        return total / n

    def optimizer_step_all(self, step: int, count_step: bool = True) -> None:
        """Set lrs and Muon momentum for optimizer step ``step``, clip globally, and step every optimizer.

        Only the last optimizer steps through Lightning's wrapper, so ``trainer.global_step`` counts
        optimizer steps (one per call), not ``optimizer.step()`` calls; ``count_step=False`` (compile
        priming) bypasses Lightning entirely.
        """
        cfg = self.optim_config
        optimizers = self.lightning_optimizers()
        momentum = muon_momentum(
            step,
            start=cfg.muon_momentum_warmup_start,
            end=cfg.muon_momentum,
            warmup_steps=cfg.muon_momentum_warmup_steps,
        )
        for opt in optimizers:
            for group in opt.optimizer.param_groups:
                group["lr"] = group["base_lr"] * self.lr_multiplier
                if isinstance(opt.optimizer, Muon):
                    group["momentum"] = momentum
        if cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.gpt.parameters(), cfg.grad_clip_norm)
        for opt in optimizers[:-1]:
            opt.optimizer.step()
        if count_step:
            optimizers[-1].step()
        else:
            optimizers[-1].optimizer.step()
        for opt in optimizers:
            opt.optimizer.zero_grad(set_to_none=True)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss = self.accumulate_gradients(*batch)  # (x, y) or, with document packing, (x, y, cu_seqlens)
        self.optimizer_step_all(self.trainer.global_step)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, sync_dist=True)
        self.log("train/lr_mult", self.lr_multiplier, on_step=True, on_epoch=False)
        self.last_train_loss = loss
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y, *nbytes = batch  # (x, y, nbytes) with a CaseOps byte sidecar
        self.val_metric.update(token_nll(self(x), y), x, y, nbytes[0] if nbytes else None)

    def on_validation_epoch_end(self) -> None:
        out = self.val_metric.compute()
        self.val_metric.reset()
        self.log("val/loss", out["val_loss"].float(), sync_dist=False)
        self.log("val/bpb", out["val_bpb"].float(), prog_bar=True, sync_dist=False)
        self.last_val = (float(out["val_loss"]), float(out["val_bpb"]))

"""Checkpoint files: loaded as tensors and plain data only, written whole or not at all, ``last`` resolved.

Every checkpoint golf-lit reads goes through :func:`load_checkpoint` (``torch.load(weights_only=True)``), so a
checkpoint cannot run code when it is opened. See docs/safety.md for exactly what loading allows.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from golf_lit.io import atomic_write
from golf_lit.model.config import ModelConfig

if TYPE_CHECKING:
    from golf_lit.model.gpt import GPT

SAFE_GLOBALS: tuple[Any, ...] = ()
"""Types a golf-lit checkpoint may hold beyond what ``weights_only=True`` already allows (tensors, dicts, lists,
tuples, strings, numbers, None, ``collections.OrderedDict``, torch dtypes/devices/sizes). golf-lit's Lightning
checkpoints (module, optimizers, loops, callbacks, hyperparameters) need nothing more, so this is empty."""

LAST = "last"
LAST_IF_PRESENT = "last-if-present"


class CheckpointError(ValueError):
    """A checkpoint that is missing its parts, corrupt, truncated, or needs more than plain data to load."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True`` (plus :data:`SAFE_GLOBALS`).

    Raises:
        FileNotFoundError: No such file.
        CheckpointError: The file is corrupt or truncated, is not a dict, or needs globals outside the allow-list;
            the one-line message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(p)!r}")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:Unsupported global: GLOBAL|Trying to call reduce for) ([\w.]+)", str(exc))
        what = found.group(1) if found else "an object that is not plain data"
        raise CheckpointError(
            f"{p}: refused to load: it needs {what}, and golf-lit loads checkpoints as tensors and plain data "
            "only (see docs/safety.md)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other failure is a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{p}: not a readable checkpoint (corrupt or truncated?): {first}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{p}: not a Lightning checkpoint (holds a {type(ckpt).__name__}, expected a dict)")
    return ckpt


def _keep_storage(storage, location):
    return storage


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with safe loading and whole-or-nothing writes.

    ``save_checkpoint`` writes into a temporary file in the checkpoint's directory, fsyncs it and renames it
    over the target (``golf_lit.io.atomic_write``): after a crash or a full disk the previous checkpoint is
    still there, whole. ``load_checkpoint`` is :func:`load_checkpoint`, whatever ``weights_only`` asks for.
    The ``golf-lit`` CLI installs it on every trainer; pass ``Trainer(plugins=[SafeCheckpointIO()])`` yourself.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint: storage_options is not supported")
        try:
            atomic_write(path, lambda f: torch.save(checkpoint, f))
        except OSError as exc:
            raise OSError(exc.errno, f"could not write checkpoint ({exc.strerror or exc})", str(path)) from exc

    @override
    def load_checkpoint(
        self, path, map_location: Callable | None = _keep_storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location)


def find_last_checkpoint(dirpaths: list[Path]) -> Path | None:
    """The newest ``last.ckpt`` among ``dirpaths`` (None when there is none)."""
    found = [d / "last.ckpt" for d in dirpaths if (d / "last.ckpt").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_resume_path(ckpt_path: str | None, dirpaths: list[Path]) -> str | None:
    """Turn ``--ckpt_path`` into a file to resume from.

    ``last`` must find a ``last.ckpt`` in one of the checkpoint directories (else an error naming them: a resume
    that silently starts from scratch is worse than none); ``last-if-present`` resumes from it when there is one
    and starts fresh otherwise. Any other value is returned unchanged.
    """
    if ckpt_path not in (LAST, LAST_IF_PRESENT):
        return ckpt_path
    last = find_last_checkpoint(dirpaths)
    if last is not None:
        return str(last)
    if ckpt_path == LAST_IF_PRESENT:
        return None
    where = ", ".join(repr(str(d)) for d in dirpaths) or "(no ModelCheckpoint callback is configured)"
    raise FileNotFoundError(
        f"ckpt_path: 'last' found no last.ckpt in {where}; pass '{LAST_IF_PRESENT}' to start fresh when there is none"
    )


EMA_STATE_KEY = "EMA"
"""Key of the EMA callback's state in a checkpoint's ``callbacks`` dict (one EMA per trainer)."""


def ema_weights_from_checkpoint(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The EMA-averaged weights stored in a Lightning checkpoint dict (None when it was trained without EMA)."""
    callbacks = checkpoint.get("callbacks")
    state = callbacks.get(EMA_STATE_KEY) if isinstance(callbacks, dict) else None
    return state.get("shadow") if isinstance(state, dict) else None


def copy_weights_into(model: torch.nn.Module, averaged: dict[str, torch.Tensor]) -> None:
    """Copy ``averaged`` weights into ``model``'s parameters (each cast to the parameter's dtype and device).

    Raises:
        ValueError: The names differ from the model's parameters.
    """
    params = dict(model.named_parameters())
    if not isinstance(averaged, dict) or set(params) != set(averaged):
        found = set(averaged) if isinstance(averaged, dict) else set()
        missing, extra = sorted(set(params) - found), sorted(map(str, found - set(params)))
        raise ValueError(f"EMA weights do not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, p in params.items():
        t = averaged[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(p.shape) or not t.is_floating_point():
            what = f"a {type(t).__name__}" if not isinstance(t, torch.Tensor) else f"{t.dtype} {tuple(t.shape)}"
            raise ValueError(f"EMA weight {k!r} is {what}, the model expects a float tensor of shape {tuple(p.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"EMA weight {k!r} holds NaN or infinite values")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(averaged[k].to(device=p.device, dtype=p.dtype))


def check_checkpoint_model(path: Path, hp: dict[str, Any], weights: dict[Any, Any]) -> None:
    """Before a checkpoint's model is built: its hyperparameters describe a model of bounded size, and its
    ``gpt.*`` weights are finite tensors with exactly that model's names and shapes (checked on the meta device).

    Raises:
        ValueError: Naming the file and the field or tensor.
    """
    from golf_lit.model.size import check_model_size

    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    flat = hp
    if isinstance(hp.get("model"), dict):  # the pre-flat layout
        flat = {**hp["model"], **{k: v for k, v in hp.items() if k != "model"}}
    try:
        cfg = ModelConfig(**{k: v for k, v in flat.items() if k in fields})
    except (TypeError, ValueError, OverflowError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: hyper_parameters are not a valid model config: {first}") from None
    template = check_model_size(cfg, f"{path}: hyper_parameters")
    for prefix in ("gpt.", "_forward."):  # GolfLM registers the GPT twice (``_forward`` is the compiled alias)
        part = {k[len(prefix) :]: v for k, v in weights.items() if isinstance(k, str) and k.startswith(prefix)}
        if prefix != "gpt." and not part:
            continue
        for name, like in template.items():
            t = part.get(name)
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{path}: state_dict entry '{prefix}{name}' is missing or not a tensor")
            if tuple(t.shape) != tuple(like.shape) or not t.is_floating_point():
                raise ValueError(
                    f"{path}: state_dict entry '{prefix}{name}' is a {str(t.dtype).removeprefix('torch.')} tensor "
                    f"of shape {tuple(t.shape)}, the hyper_parameters' model expects a float tensor of shape "
                    f"{tuple(like.shape)}"
                )
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{path}: state_dict entry '{prefix}{name}' holds NaN or infinite values")
        extra = sorted(set(part) - set(template))
        if extra:
            raise ValueError(f"{path}: unexpected state_dict entry '{prefix}{extra[0]}' (the model has no such "
                             "parameter)")  # fmt: skip


def load_checkpoint_model(ckpt_path: str | Path, use_ema: bool = True) -> tuple[GPT, dict[str, Any]]:
    """Rebuild the GPT from a golf-lit Lightning checkpoint (EMA weights when the checkpoint has them).

    The file is loaded with ``weights_only=True`` (``golf_lit.train.checkpoint.load_checkpoint``) and the module is
    rebuilt by ``GolfLM.load_from_checkpoint``; the EMA weights from :func:`ema_weights_from_checkpoint`.

    Returns:
        ``(model, checkpoint)``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is corrupt, truncated, refused by the safe loader, or not a golf-lit checkpoint.
    """
    from golf_lit.train.module import GolfLM  # late: the module imports Lightning

    path = Path(ckpt_path)
    ckpt = load_checkpoint(path)
    hp = ckpt.get("hyper_parameters")
    weights = ckpt.get("state_dict")
    if not isinstance(hp, dict) or not isinstance(weights, dict) or not any(
        isinstance(k, str) and k.startswith("gpt.") for k in weights
    ):
        raise ValueError(f"{path}: not a golf-lit checkpoint (no GolfLM hyper_parameters / gpt.* weights)")
    check_checkpoint_model(path, hp, weights)
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            module = GolfLM.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except (TypeError, KeyError, RuntimeError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a golf-lit checkpoint this version can rebuild ({first})") from None
    model = module.gpt
    averaged = ema_weights_from_checkpoint(ckpt) if use_ema else None
    if averaged:
        try:
            copy_weights_into(model, averaged)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return model, ckpt

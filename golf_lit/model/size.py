"""Bounds on a model whose shape comes from a file a user was handed (an artifact's config.json, a checkpoint's
hyperparameters), checked before anything of that size is allocated (docs/safety.md).

A challenge artifact holds at most 16,000,000 bytes; no useful encoding stores a parameter in less than one bit,
so a model with more than 8 x 16,000,000 = 128,000,000 parameters cannot be a challenge model. The count is first
bounded by arithmetic on the config (big matrices only, a lower bound of the true count), then counted exactly on
a meta-device model (shapes only, no memory for the weights).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from golf_lit.model.config import ModelConfig

ARTIFACT_CAP_BYTES = 16_000_000
"""The challenge's limit on code + compressed weights (decimal bytes)."""
MAX_PARAMS = 8 * ARTIFACT_CAP_BYTES
"""Most parameters a model read from an untrusted file may have (one bit each would fill the artifact cap)."""
MAX_LAYERS = 256
"""Most physical blocks (the record has 11; module objects cost memory even on the meta device)."""
MAX_VIRTUAL_LAYERS = 1024
"""Most blocks run per forward with depth recurrence (the top stack runs 17)."""


class ModelSizeError(ValueError):
    """A model config from a file that describes a model no 16 MB artifact can hold (the message names the file)."""


def check_field_types(cfg: ModelConfig, source: str) -> None:
    """Every field has its default's type (a file can hold ``"two"`` or ``2.5`` where an int belongs, which the
    dataclass does not check) and every number is finite, ``rope_base`` positive.

    Raises:
        ModelSizeError: Naming the file and the field.
    """
    for f in dataclasses.fields(ModelConfig):
        value, default = getattr(cfg, f.name), f.default
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int) or (default is None and f.name == "parallel_start_layer"):
            ok = (value is None and default is None) or (isinstance(value, int) and not isinstance(value, bool))
            want = "an integer" + (" or null" if default is None else "")
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            want = "a finite number"
        else:
            ok, want = isinstance(value, type(default)), f"a {type(default).__name__}"
        if not ok:
            raise ModelSizeError(f"{source}: model.{f.name} must be {want}, got {value!r}")
    if not cfg.rope_base > 0:
        raise ModelSizeError(f"{source}: model.rope_base must be positive, got {cfg.rope_base}")


def lower_bound_params(cfg: ModelConfig) -> int:
    """Parameters of the big matrices alone (embeddings, q/proj, MLP): a lower bound of the true count."""
    dim = int(cfg.model_dim)
    hidden = int(cfg.mlp_mult * dim)
    per_block = 2 * dim * dim + 2 * dim * hidden
    bigram = int(cfg.bigram_vocab_size) * int(cfg.bigram_dim) if cfg.bigram_vocab_size else 0
    return int(cfg.vocab_size) * dim + bigram + int(cfg.num_layers) * per_block


def check_model_size(cfg: ModelConfig, source: str, max_params: int = MAX_PARAMS) -> dict[str, Tensor]:
    """Refuse a config whose model is larger than ``max_params``, without allocating it.

    Args:
        cfg: The config read from ``source``.
        source: The file it came from (named in the error).
        max_params: The bound.

    Returns:
        The model's state dict on the meta device (names, shapes and dtypes; no data): a template to check a file's
        tensors against before the real model is built.

    Raises:
        ModelSizeError: Too many layers, too deep a loop, or too many parameters.
    """
    check_field_types(cfg, source)
    if cfg.num_layers > MAX_LAYERS:
        raise ModelSizeError(f"{source}: model.num_layers={cfg.num_layers} is more than golf-lit loads ({MAX_LAYERS})")
    virtual = cfg.num_layers + (cfg.num_loops * (cfg.loop_end - cfg.loop_start + 1) if cfg.num_loops else 0)
    if virtual > MAX_VIRTUAL_LAYERS:
        raise ModelSizeError(
            f"{source}: model.num_loops={cfg.num_loops} runs {virtual} blocks per forward, more than golf-lit "
            f"loads ({MAX_VIRTUAL_LAYERS})"
        )
    bound = lower_bound_params(cfg)
    if bound > max_params:
        raise ModelSizeError(_too_big(source, cfg, f"at least {bound:,}", max_params))
    from golf_lit.model.gpt import GPT  # late: gpt imports the attention back-ends

    with torch.device("meta"):
        template = GPT(cfg).state_dict()
    count = sum(t.numel() for t in template.values())
    if count > max_params:
        raise ModelSizeError(_too_big(source, cfg, f"{count:,}", max_params))
    return template


def _too_big(source: str, cfg: ModelConfig, count: str, max_params: int) -> str:
    return (
        f"{source}: the model it describes (num_layers={cfg.num_layers}, model_dim={cfg.model_dim}, "
        f"vocab_size={cfg.vocab_size}) has {count} parameters, more than the {max_params:,} a 16,000,000-byte "
        "artifact can hold"
    )

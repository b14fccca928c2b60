"""Split the GPT's parameters into the record's optimizer groups and build the optimizers (docs/record-stack.md §6).

Groups (parameter names are the seed's): ``token`` (tok_emb, bigram.embed; AdamW), ``head`` (untied lm_head;
AdamW), ``matrix`` (2-D block weights and bigram.proj; Muon) and ``scalar`` (everything small or named
like a control: gains, mixes, gates, skip weights; AdamW). Grouping follows the record line's train_gpt.py
(PR #638 / #761); the matrix/scalar split by name pattern comes from modded-nanogpt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from golf_lit.model.names import is_control
from golf_lit.optim.config import OptimConfig
from golf_lit.optim.muon import Muon

TOKEN_NAMES = frozenset({"tok_emb.weight", "bigram.embed.weight"})
HEAD_NAMES = frozenset({"lm_head.weight"})
EXTRA_MATRIX_NAMES = frozenset({"bigram.proj.weight"})
EXTRA_SCALAR_NAMES = frozenset(
    {
        "skip_weights",
        "smear.gate",
        "bigram.scale",
        # leaderboard-top controls (docs/top-stack.md §4.1: scalar AdamW group)
        "skip_gates",
        "smear.gate_w",
        "smear.lam",
        "parallel_post_lambdas",
        "parallel_resid_lambdas",
    }
)


_RULES: dict[str, Callable[[str, nn.Parameter], bool]] = {
    "token": lambda n, p: n in TOKEN_NAMES,
    "head": lambda n, p: n in HEAD_NAMES,
    "matrix": lambda n, p: n in EXTRA_MATRIX_NAMES or (n.startswith("blocks.") and p.ndim == 2 and not is_control(n)),
    "scalar": lambda n, p: n in EXTRA_SCALAR_NAMES or (n.startswith("blocks.") and (p.ndim < 2 or is_control(n))),
}


@dataclass(frozen=True)
class ParamGroup:
    """One optimizer group.

    Args:
        name: "token", "head", "matrix" or "scalar".
        lr: Peak (base) learning rate.
        named_params: (name, parameter) pairs in model order.
    """

    name: str
    lr: float
    named_params: list[tuple[str, nn.Parameter]]

    @property
    def params(self) -> list[nn.Parameter]:
        """The parameters without their names."""
        return [p for _, p in self.named_params]

    @property
    def names(self) -> list[str]:
        """The parameter names."""
        return [n for n, _ in self.named_params]


def build_param_groups(named_parameters: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig) -> dict[str, ParamGroup]:
    """Assign every parameter to exactly one of the record's groups.

    The token group uses ``tied_embed_lr`` when there is no ``lm_head.weight`` (tied embeddings) and
    ``embed_lr`` otherwise, as the seed does.

    Args:
        named_parameters: ``model.named_parameters()`` of a GPT (seed parameter names).
        cfg: Optimizer settings (learning rates).

    Returns:
        Groups keyed "token", "matrix", "scalar" and, only for an untied head, "head"; each in model order.

    Raises:
        ValueError: A parameter matches no group or several groups, a name repeats, or one tensor appears
            under two names; the message names the parameters.
    """
    members: dict[str, list[tuple[str, nn.Parameter]]] = {key: [] for key in _RULES}
    unmatched, ambiguous, seen_names, seen_tensors = [], [], set(), {}
    for name, p in named_parameters:
        if name in seen_names:
            raise ValueError(f"parameter {name!r} is listed twice")
        seen_names.add(name)
        if id(p) in seen_tensors:
            raise ValueError(
                f"parameter {name!r} is the same tensor as {seen_tensors[id(p)]!r}: it would be "
                "assigned twice (pass named_parameters() with duplicates removed)"
            )
        seen_tensors[id(p)] = name
        hits = [key for key, rule in _RULES.items() if rule(name, p)]
        if not hits:
            unmatched.append(f"{name} {tuple(p.shape)}")
        elif len(hits) > 1:
            ambiguous.append(f"{name} -> {hits}")
        else:
            members[hits[0]].append((name, p))
    if unmatched:
        raise ValueError(f"parameters not in any optimizer group (token/head/matrix/scalar): {unmatched}")
    if ambiguous:
        raise ValueError(f"parameters assigned to several optimizer groups: {ambiguous}")
    token_lr = cfg.embed_lr if members["head"] else cfg.tied_embed_lr
    lrs = {"token": token_lr, "head": cfg.head_lr, "matrix": cfg.matrix_lr, "scalar": cfg.scalar_lr}
    return {key: ParamGroup(key, lrs[key], members[key]) for key in _RULES if key != "head" or members[key]}


def build_optimizers(model: nn.Module, cfg: OptimConfig) -> list[torch.optim.Optimizer]:
    """Create the record's optimizers: AdamW (token), Muon (matrix), AdamW (scalar) [, AdamW (head)].

    Every param group carries ``base_lr`` (its peak lr) so a schedule can set ``lr = base_lr * m``.
    AdamW is fused when all its parameters are on CUDA. The token group takes ``embed_wd``/``embed_beta2`` and
    the scalar group ``scalar_beta2`` when set (docs/top-stack.md §4.1), else ``adam_wd``/``beta2``.

    Args:
        model: The GPT.
        cfg: Optimizer settings.

    Returns:
        The optimizers in the order token, matrix, scalar, then head when the embeddings are untied.
    """
    groups = build_param_groups(model.named_parameters(), cfg)

    def pick(value: float | None, default: float) -> float:
        return default if value is None else value

    wds = {"token": pick(cfg.embed_wd, cfg.adam_wd)}
    beta2s = {"token": pick(cfg.embed_beta2, cfg.beta2), "scalar": pick(cfg.scalar_beta2, cfg.beta2)}

    def adamw(group: ParamGroup) -> torch.optim.AdamW:
        fused = all(p.is_cuda for p in group.params)
        return torch.optim.AdamW(
            [{"params": group.params, "lr": group.lr, "base_lr": group.lr}],
            betas=(cfg.beta1, beta2s.get(group.name, cfg.beta2)),
            eps=cfg.adam_eps,
            weight_decay=wds.get(group.name, cfg.adam_wd),
            fused=fused,
        )

    matrix = groups["matrix"]
    muon = Muon(
        [{"params": matrix.params, "lr": matrix.lr, "base_lr": matrix.lr}],
        lr=matrix.lr,
        momentum=cfg.muon_momentum,
        nesterov=True,
        backend_steps=cfg.muon_backend_steps,
        weight_decay=cfg.muon_wd,
        shard_ns=cfg.muon_shard_ns,
        ns_coefficients=cfg.ns_coefficients,
        row_normalize=cfg.muon_row_normalize,
        ns_dtype=cfg.muon_ns_dtype,
    )
    optimizers: list[torch.optim.Optimizer] = [adamw(groups["token"]), muon, adamw(groups["scalar"])]
    if "head" in groups:
        optimizers.append(adamw(groups["head"]))
    return optimizers

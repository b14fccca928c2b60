"""Parameter-name conventions shared by the optimizer split and the quantizer (docs/record-stack.md §6, §9.1)."""

from __future__ import annotations

CONTROL_PATTERNS: tuple[str, ...] = (
    "attn_scale",
    "attn_scales",
    "mlp_scale",
    "mlp_scales",
    "resid_mix",
    "resid_mixes",
    "q_gain",
    "skip_weight",
    "skip_weights",
    "smear",
    "vr_lambda",
    "attn_gate",
    "canon_a",
    "canon_c",
    "delta_gate",
    # leaderboard-top controls (docs/top-stack.md §3.4-3.7); "attn_gate" above also covers "attn_gate_w"
    "skip_gates",
    "parallel_post_lambdas",
    "parallel_resid_lambdas",
)
"""Name fragments of control tensors (the seed's CONTROL_TENSOR_NAME_PATTERNS): scalar AdamW group in training,
fp32 passthrough in the artifact when too large for the fp16 passthrough."""


def is_control(name: str) -> bool:
    """True if ``name`` contains any control pattern."""
    return any(pattern in name for pattern in CONTROL_PATTERNS)

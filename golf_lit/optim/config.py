"""Optimizer hyperparameters (docs/record-stack.md §6, §14). Field names are the seed's environment variables in
lowercase."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(kw_only=True)
class OptimConfig:
    """Learning rates, Muon and AdamW settings and the global gradient clip of the record run."""

    matrix_lr: float = 0.025
    """Peak lr of Muon on the 2-D block matrices and bigram.proj."""
    scalar_lr: float = 0.025
    """Peak lr of AdamW on the scalar/control group (gains, mixes, gates, skip weights)."""
    tied_embed_lr: float = 0.035
    """Peak lr of AdamW on tok_emb and bigram.embed when the embedding is tied to the output head."""
    embed_lr: float = 0.6
    """Peak lr of AdamW on tok_emb and bigram.embed when the embedding is untied (not used by the record)."""
    head_lr: float = 0.008
    """Peak lr of AdamW on an untied lm_head (not used by the record)."""
    muon_momentum: float = 0.99
    """Muon momentum at the end of its warm-up."""
    muon_momentum_warmup_start: float = 0.92
    """Muon momentum at step 0; ramps linearly to muon_momentum."""
    muon_momentum_warmup_steps: int = 1500
    """Optimizer steps of the momentum ramp (0 = use muon_momentum from the start)."""
    muon_backend_steps: int = 5
    """Newton-Schulz iterations per Muon update."""
    muon_wd: float = 0.04
    """Decoupled weight decay of Muon: W <- W * (1 - lr * muon_wd)."""
    muon_shard_ns: bool = False
    """Under torch.distributed, orthogonalize each matrix on one rank and all-reduce the updates (speed only)."""
    muon_ns_dtype: str = "bf16"
    """Newton-Schulz dtype: bf16 (the record), fp32, or auto (fp32 only on a CPU without native bf16 matmuls)."""
    adam_wd: float = 0.04
    """Decoupled (AdamW) weight decay of the token, scalar and head groups."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip_norm: float = 0.3
    """Global L2 norm clip over all parameters each step (0 = no clipping)."""
    ns_coefficients: str = "fixed"
    """Muon's Newton-Schulz coefficients: "fixed" (one triple, the record) or "polar_express" (one triple per
    iteration, the leaderboard top; docs/top-stack.md §4.2)."""
    muon_row_normalize: bool = False
    """MuonEq-R: divide each row of Muon's Nesterov update by its L2 norm before orthogonalizing (top: true)."""
    embed_wd: float | None = None
    """AdamW weight decay of the token group (tok_emb, bigram.embed); None = adam_wd (top: 0.085)."""
    embed_beta2: float | None = None
    """AdamW beta2 of the token group; None = beta2."""
    scalar_beta2: float | None = None
    """AdamW beta2 of the scalar/control group; None = beta2."""

    def __post_init__(self) -> None:
        def bad(key: str, msg: str) -> ValueError:
            return ValueError(f"optim.{key}: {msg}, got {getattr(self, key)!r}")

        for key in ("matrix_lr", "scalar_lr", "tied_embed_lr", "embed_lr", "head_lr"):
            if not getattr(self, key) > 0:
                raise bad(key, "must be positive")
        for key in ("muon_momentum", "muon_momentum_warmup_start", "beta1", "beta2", "embed_beta2", "scalar_beta2"):
            if getattr(self, key) is not None and not 0 <= getattr(self, key) < 1:
                raise bad(key, "must be in [0, 1)" + (" or null" if key.endswith("_beta2") else ""))
        for key in ("muon_wd", "adam_wd", "grad_clip_norm", "embed_wd"):
            if getattr(self, key) is not None and not getattr(self, key) >= 0:
                raise bad(key, "must be >= 0" + (" or null" if key == "embed_wd" else ""))
        if self.ns_coefficients not in ("fixed", "polar_express"):
            raise bad("ns_coefficients", 'must be "fixed" or "polar_express"')
        if self.muon_momentum_warmup_steps < 0:
            raise bad("muon_momentum_warmup_steps", "must be >= 0")
        if self.muon_backend_steps < 1:
            raise bad("muon_backend_steps", "must be >= 1")
        if self.muon_ns_dtype not in ("bf16", "fp32", "auto"):
            raise bad("muon_ns_dtype", "must be one of bf16, fp32, auto")
        if not self.adam_eps > 0:
            raise bad("adam_eps", "must be positive")

    def to_dict(self) -> dict:
        """Plain dict of the fields (for reports and checkpoints)."""
        return asdict(self)

"""Configuration dataclasses. Field names follow the seed's environment variables in lowercase.

Every default is the record value (SPEC §14); each field's docstring is shown by ``golf-lit fit -h``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(kw_only=True)
class ModelConfig:
    """Shape and tricks of the record GPT (SPEC §4-5)."""

    vocab_size: int = 1024
    """Vocabulary size; must equal the tokenizer's."""
    num_layers: int = 11
    """Number of transformer blocks (U-Net: num_layers // 2 encoder blocks, the rest decoder)."""
    model_dim: int = 512
    """Residual stream width."""
    num_heads: int = 8
    """Query heads; model_dim must be divisible by it."""
    num_kv_heads: int = 4
    """Key/value heads (GQA); num_heads must be divisible by it."""
    mlp_mult: float = 3.0
    """MLP hidden width = int(mlp_mult * model_dim)."""
    tie_embeddings: bool = True
    """Use the token embedding as the output head (otherwise a zero-initialised lm_head)."""
    tied_embed_init_std: float = 0.005
    """Std of the normal init of tok_emb."""
    logit_softcap: float = 30.0
    """Logits become softcap * tanh(logits / softcap)."""
    rope_base: float = 10000.0
    """RoPE base before NTK scaling."""
    rope_dims: int = 16
    """Rotated dims per head (partial RoPE); 0 rotates the whole head. Must be even and <= head_dim."""
    rope_train_seq_len: int = 1024
    """NTK reference length: longer sequences use base * (T/ref)^(d/(d-2)) (the seed hard-codes 1024)."""
    qk_gain_init: float = 1.5
    """Initial per-head query gain."""
    ln_scale: bool = True
    """Multiply each block's pre-norm outputs by 1/sqrt(layer+1)."""
    xsa_last_n: int = 11
    """Exclusive self attention on the last N layers (0 = off, num_layers = all)."""
    value_residual: bool = True
    """Mix layer 0's raw values into every later layer: v = l0*v0 + l1*v (layer 0 has no lambdas)."""
    gated_attention: bool = True
    """Per-head sigmoid output gate computed from the block input."""
    attn_gate_bias_init: float = 4.0
    """Initial bias of the attention gate (sigmoid(4) ~ 0.982)."""
    leaky_relu: bool = True
    """MLP activation LeakyReLU(slope)^2 (False: ReLU^2)."""
    leaky_slope: float = 0.9
    """LeakyReLU slope. The record's README says 0.5; the code that produced its logs defaults to 0.9 (SPEC §15.1)."""
    smear_gate: bool = True
    """Blend each position's normalised embedding with the previous position's (SmearGate)."""
    bigram_vocab_size: int = 4096
    """BigramHash buckets (last one reserved for position 0); 0 disables BigramHash."""
    bigram_dim: int = 128
    """BigramHash embedding width (projected to model_dim)."""
    unet_skips: bool = True
    """U-Net skip connections from encoder to decoder blocks with learned per-channel weights."""
    attention_backend: str = "auto"
    """'auto' (FlashAttention-3 when importable on CUDA, else SDPA), 'sdpa' or 'fa3'."""
    seed_bf16_attention: bool = False
    """Cast q/k/v to bf16 for attention even in fp32, as the seed always does (for bit-matching seed runs)."""

    def __post_init__(self) -> None:
        def bad(key: str, msg: str) -> ValueError:
            return ValueError(f"model.{key}: {msg}")

        for key in ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads"):
            if getattr(self, key) <= 0:
                raise bad(key, f"must be positive, got {getattr(self, key)}")
        if self.model_dim % self.num_heads:
            raise bad("num_heads", f"model_dim={self.model_dim} is not divisible by num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise bad(
                "num_kv_heads", f"num_heads={self.num_heads} is not divisible by num_kv_heads={self.num_kv_heads}"
            )
        head_dim = self.model_dim // self.num_heads
        if self.rope_dims < 0 or self.rope_dims % 2 or self.rope_dims > head_dim:
            raise bad("rope_dims", f"must be even and between 0 and head_dim={head_dim}, got {self.rope_dims}")
        if (self.rope_dims or head_dim) <= 2:
            raise bad("rope_dims", "at least 4 rotary dims are needed for the NTK base rule")
        if not 0 <= self.xsa_last_n <= self.num_layers:
            raise bad("xsa_last_n", f"must be between 0 and num_layers={self.num_layers}, got {self.xsa_last_n}")
        if self.logit_softcap <= 0:
            raise bad("logit_softcap", f"must be positive, got {self.logit_softcap}")
        if self.mlp_mult <= 0:
            raise bad("mlp_mult", f"must be positive, got {self.mlp_mult}")
        if self.bigram_vocab_size < 0 or self.bigram_vocab_size == 1:
            raise bad("bigram_vocab_size", f"must be 0 (off) or >= 2, got {self.bigram_vocab_size}")
        if self.attention_backend not in ("auto", "sdpa", "fa3"):
            raise bad("attention_backend", f"must be 'auto', 'sdpa' or 'fa3', got {self.attention_backend!r}")

    @property
    def head_dim(self) -> int:
        """Per-head width."""
        return self.model_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        """MLP hidden width."""
        return int(self.mlp_mult * self.model_dim)

    def to_dict(self) -> dict:
        """Plain dict of the fields (for reports and checkpoints)."""
        return asdict(self)

"""Configuration dataclasses. Field names follow the seed's environment variables in lowercase.

Every default is the record value (docs/record-stack.md §14); each field's docstring is shown by ``golf-lit fit -h``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(kw_only=True)
class ModelConfig:
    """Shape and tricks of the record GPT (docs/record-stack.md §4-5)."""

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
    """LeakyReLU slope. The record's README says 0.5; the code that produced its logs defaults to 0.9
    (docs/record-stack.md §15.1)."""
    smear_gate: bool = True
    """Blend each position's normalised embedding with the previous position's (SmearGate)."""
    bigram_vocab_size: int = 4096
    """BigramHash buckets (last one reserved for position 0); 0 disables BigramHash."""
    bigram_dim: int = 128
    """BigramHash embedding width (projected to model_dim)."""
    unet_skips: bool = True
    """U-Net skip connections from encoder to decoder blocks with learned per-channel weights."""
    attention_backend: str = "auto"
    """'auto' (FlashAttention-3 when importable on CUDA, else SDPA; document-masked attention: FA3's varlen kernel,
    else flex_attention with a document block mask on CUDA, else SDPA with a dense mask), 'sdpa', 'fa3' or 'flex'
    (document masks through flex_attention on every device; eager and forward-only on the CPU)."""
    seed_bf16_attention: bool = False
    """Cast q/k/v to bf16 for attention even in fp32, as the seed always does (for bit-matching seed runs)."""
    # Leaderboard-top options (docs/top-stack.md §3-4); every default keeps the record model unchanged.
    num_loops: int = 0
    """Depth recurrence: extra passes over blocks loop_start..loop_end once looping is active (0 = off). Virtual
    order [0..loop_start-1] + [loop_start..loop_end] x (num_loops+1) + [loop_end+1..]; repeats share every weight
    (docs/top-stack.md §3.3; 0331-ParRes PR #1204 -> 0409-3Loop PR #1493; top: 2)."""
    loop_start: int = 0
    """First looped block (physical index; top: 3)."""
    loop_end: int = 0
    """Last looped block, inclusive (top: 5)."""
    enable_looping_at: float = 0.0
    """Fraction of the training budget at which callbacks.LoopingSwitch turns looping on (0 = from the start; top:
    0.35). Evaluation, export and TTT always run the looped model."""
    skip_gates_enabled: bool = False
    """Sigmoid skip gates: x <- s*x + (1-s)*(w*skip), s = sigmoid(skip_gates), per channel, init 0.5/0.5
    (docs/top-stack.md §3.4; 0401-V4096 PR #1218 from PR #1089). Needs unet_skips."""
    parallel_start_layer: int | None = None
    """Two-lane parallel residuals from this physical block on (None = off; num_layers = no block is parallel):
    attention reads lane 0 (mixed with x0), the MLP reads lane 1, both write both lanes through learned
    lambdas (docs/top-stack.md §3.5; PR #1529 via 0410-VarLen PR #1530; top: 8)."""
    parallel_final_lane: str = "mean"
    """Which lane feeds the final norm once lanes split: 'mean' (average of both), 'lane0' or 'lane1'."""
    attn_gate_variant: str = "base"
    """Attention output gate form when gated_attention is on (docs/top-stack.md §3.6): 'base' (Linear with bias
    attn_gate_bias_init, docs/record-stack.md §4.11), 'dense_g1' (sigmoid(W u), W heads x model_dim ~ N(0, 0.005^2),
    0419-QGate
    PR #1736), 'sparse' (sigmoid(c W u[:gate_window]), W zero: 0.5 at init, 0423-PolarNS PR #1787) or
    'out_gate' (2 sigmoid(W u[:gate_window]), W zero: identity at init, 0416-Smear PR #1667)."""
    gate_window: int = 12
    """Leading channels read by the sparse/out attention gates and the BOS-fixed SmearGate."""
    sparse_attn_gate_scale: float = 1.0
    """Scale c inside the sparse gate's sigmoid (top: 0.5)."""
    smear_gate_variant: str = "base"
    """'base': SmearGate on the normalised embedding (docs/record-stack.md §4.8; mixes across documents). 'gated_bos':
    e_t <- e_t + lambda sigmoid(w e_t[:gate_window]) e_(t-1) on the raw token embedding, skipped where
    ids_t == bos_id, identity at init (docs/top-stack.md §3.7; 0416-Smear PR #1667, BOS fix PR #1851)."""
    rope_yarn: bool = True
    """NTK base rescale base*(T/rope_train_seq_len)^(d/(d-2)) for T > rope_train_seq_len (False: base as given;
    top: False, which the record logs show despite the README's 'YaRN', docs/top-stack.md §3.6)."""
    rope_positions: str = "flat"
    """RoPE positions in document-packed rows (``cu_seqlens``): 'flat' (the token's index in its row, as the top
    record does, docs/top-stack.md §2.5) or 'per_document' (restart at 0 in every segment, so a document's logits
    do not depend on where it sits in the row). The same function in exact arithmetic and equally accurate in bf16
    and in fp32 up to a few thousand tokens; at 98,304-token rows flat is ~10x further from fp64 in fp32
    (docs/model.md). Unpacked rows have positions 0..T-1 under both."""
    fused_ce_enabled: bool = False
    """Training loss through the column-blocked softcapped cross-entropy that keeps only the per-row log-sum-exp
    (docs/top-stack.md §4.5; 0423-PolarNS PR #1787). Same loss and gradients as the eager path."""
    bos_id: int = 1
    """Document-start token id (SentencePiece BOS of the challenge tokenizers)."""

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
        if self.num_loops < 0:
            raise bad("num_loops", f"must be >= 0, got {self.num_loops}")
        if self.num_loops and not 0 <= self.loop_start <= self.loop_end < self.num_layers:
            raise bad(
                "loop_end",
                f"need 0 <= loop_start <= loop_end < num_layers={self.num_layers}, "
                f"got loop_start={self.loop_start} loop_end={self.loop_end}",
            )
        if not 0.0 <= self.enable_looping_at <= 1.0:
            raise bad("enable_looping_at", f"must be a fraction in [0, 1], got {self.enable_looping_at}")
        if self.skip_gates_enabled and not self.unet_skips:
            raise bad("skip_gates_enabled", "needs unet_skips=true")
        start = self.parallel_start_layer
        if start is not None:
            if not 0 <= start <= self.num_layers:
                raise bad("parallel_start_layer", f"must be null or in [0, num_layers={self.num_layers}], got {start}")
            if self.num_loops and self.loop_start < start <= self.loop_end:
                raise bad(
                    "parallel_start_layer",
                    f"{start} splits the looped range {self.loop_start}..{self.loop_end} (a sequential block would "
                    "follow a parallel one); start at or before loop_start or after loop_end",
                )
        if self.parallel_final_lane not in ("mean", "lane0", "lane1"):
            raise bad("parallel_final_lane", f"must be 'mean', 'lane0' or 'lane1', got {self.parallel_final_lane!r}")
        if self.attn_gate_variant not in ("base", "dense_g1", "sparse", "out_gate"):
            raise bad(
                "attn_gate_variant",
                f"must be 'base', 'dense_g1', 'sparse' or 'out_gate', got {self.attn_gate_variant!r}",
            )
        if not 1 <= self.gate_window <= self.model_dim:
            raise bad("gate_window", f"must be between 1 and model_dim={self.model_dim}, got {self.gate_window}")
        if self.smear_gate_variant not in ("base", "gated_bos"):
            raise bad("smear_gate_variant", f"must be 'base' or 'gated_bos', got {self.smear_gate_variant!r}")
        if not 0 <= self.bos_id < self.vocab_size:
            raise bad("bos_id", f"must be a token id below vocab_size={self.vocab_size}, got {self.bos_id}")
        if self.rope_positions not in ("flat", "per_document"):
            raise bad("rope_positions", f"must be 'flat' or 'per_document', got {self.rope_positions!r}")
        if self.attention_backend not in ("auto", "sdpa", "fa3", "flex"):
            raise bad("attention_backend", f"must be 'auto', 'sdpa', 'fa3' or 'flex', got {self.attention_backend!r}")

    @property
    def head_dim(self) -> int:
        """Per-head width."""
        return self.model_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        """MLP hidden width."""
        return int(self.mlp_mult * self.model_dim)

    @property
    def looped_order(self) -> list[int]:
        """Physical block index of every virtual layer with looping active (plain order when num_loops is 0)."""
        layers = list(range(self.num_layers))
        if not self.num_loops:
            return layers
        loop = layers[self.loop_start : self.loop_end + 1]
        return layers[: self.loop_start] + loop * (self.num_loops + 1) + layers[self.loop_end + 1 :]

    def to_dict(self) -> dict:
        """Plain dict of the fields (for reports and checkpoints)."""
        return asdict(self)

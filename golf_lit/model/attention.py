"""Causal self attention with GQA, QK-norm, partial RoPE, q_gain, value residual, XSA and output gating."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from golf_lit.model.config import ModelConfig
from golf_lit.model.layers import CastedLinear, Rotary, apply_rotary, rms_norm


@functools.cache
def flash_attn_3():
    """FlashAttention-3's ``flash_attn_func`` if its package is importable, else None."""
    try:
        from flash_attn_interface import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


@functools.cache
def flash_attn_3_varlen():
    """FlashAttention-3's ``flash_attn_varlen_func`` (document-masked attention) if importable, else None."""
    try:
        from flash_attn_interface import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


@functools.cache
def compiled_flex_attention():
    """flex_attention through torch.compile: the fused, block-sparse kernel (eager flex materialises the scores)."""
    return torch.compile(flex_attention, dynamic=False)


def segment_backend(backend: str, device: torch.device) -> str:
    """Which kernel runs document-masked attention for ``model.attention_backend`` on ``device``.

    'fa3' (FlashAttention-3's varlen kernel), 'flex' (flex_attention with a document block mask) or 'sdpa' (SDPA
    with a dense (B, T, T) boolean mask, O(T^2) memory). 'auto' picks FA3 on CUDA when installed, else flex on
    CUDA, else SDPA: on the CPU flex has no backward pass in torch 2.13 and its eager form materialises the
    scores anyway. An explicit 'flex' runs it on the CPU too (eager, forward only: tests and inference).
    """
    if backend in ("fa3", "sdpa", "flex"):
        return backend
    if device.type == "cuda" and flash_attn_3_varlen() is not None:
        return "fa3"
    if device.type == "cuda":
        return "flex"
    return "sdpa"


def document_block_mask(segment: Tensor, block_size: int = 128) -> BlockMask:
    """flex_attention ``BlockMask`` of causal attention inside each segment of a packed (B, T) batch.

    The block structure is read off the segment ids instead of evaluating the token mask on all T^2 pairs
    (``create_block_mask`` without compile evaluates it on every pair: 98,304^2 at the record's row length).
    Segment ids never decrease along a row, so for a query block i and an earlier key block j < i some pair is
    allowed iff the last key's segment equals the first query's, and every pair iff the first key's segment
    equals the last query's (one segment across both blocks); the diagonal block is always partial, later key
    blocks are empty. Blocks cut by the row end stay partial, so the token mask handles them.

    Args:
        segment: Segment index of every token (B, T), nondecreasing along each row.
        block_size: flex_attention's tile (128 on GPUs; tests use small tiles to get many blocks).

    Returns:
        A BlockMask with shape (B, 1, T, T) whose mask_mod is ``same segment and q >= k``.
    """
    B, T = segment.shape
    nb = -(-T // block_size)
    pad = nb * block_size - T
    ends = torch.cat([segment, segment[:, -1:].expand(B, pad)], dim=1)  # padding repeats the last id
    blocks = ends.reshape(B, nb, block_size)
    first, last = blocks[..., 0], blocks[..., -1]  # (B, nb) segment of each block's first / last token
    complete = torch.arange(nb, device=segment.device) < T // block_size  # blocks not cut by the row end
    i = torch.arange(nb, device=segment.device)
    earlier = i[None, :, None] > i[None, None, :]  # (1, nq, nk): key block before query block
    any_pair = (earlier & (last[:, None, :] == first[:, :, None])) | (i[:, None] == i[None, :])[None]
    full = earlier & (first[:, None, :] == last[:, :, None]) & complete[None, :, None] & complete[None, None, :]
    partial = any_pair & ~full

    def as_indices(blocks_mask: Tensor) -> tuple[Tensor, Tensor]:
        counts = blocks_mask.sum(-1, dtype=torch.int32)[:, None]  # (B, 1, nq)
        order = torch.argsort((~blocks_mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)[:, None]
        return counts, order  # the allowed key blocks first, in increasing order

    seg_ids = F.pad(segment, (0, pad), value=-1) if pad else segment  # padded keys match no real query

    def mask_mod(b, h, q_idx, kv_idx):
        return (seg_ids[b, q_idx] == seg_ids[b, kv_idx]) & (q_idx >= kv_idx)

    kv_num, kv_idx = as_indices(partial)
    full_num, full_idx = as_indices(full)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size, mask_mod=mask_mod, seq_lengths=(T, T)
    )


@dataclass(frozen=True)
class Segments:
    """Document packing of one batch (docs/top-stack.md §2.5), computed once per forward by the GPT.

    Args:
        cu_seqlens: int32 segment starts of the flattened batch, ending with the total length.
        segment: Segment index of every token (B, T).
        position: RoPE position of every token (B, T), its offset in its segment (``rope_positions:
            per_document``), or None for the row's own 0..T-1 (``flat``).
        max_seqlen: Upper bound on a segment's length (FlashAttention-3's scheduling hint).
        block_mask: flex_attention's document BlockMask when the layers run flex (``segment_backend``), else None.
    """

    cu_seqlens: Tensor
    segment: Tensor
    position: Tensor | None
    max_seqlen: int
    block_mask: Any = None


def exclusive_self_attention(y: Tensor, v: Tensor) -> Tensor:
    """Remove from each head's output its component along the token's own value vector (XSA).

    XSA: arXiv:2603.09078; efficient GQA form from record 2026-03-20_11L_EfficientPartialXSA.

    Args:
        y: Attention output (B, T, H, D).
        v: Values actually attended over (B, T, Hkv, D), H divisible by Hkv.

    Returns:
        (B, T, H, D) with ``y - <y, v_hat> v_hat`` per head, v_hat the unit value of the head's KV group.
    """
    B, T, H, D = y.shape
    hkv = v.size(-2)
    y_g = y.reshape(B, T, hkv, H // hkv, D)  # (B, T, Hkv, group, D), no repeat_interleave
    v_hat = F.normalize(v, dim=-1).unsqueeze(-2)  # (B, T, Hkv, 1, D)
    return (y_g - (y_g * v_hat).sum(dim=-1, keepdim=True) * v_hat).reshape(B, T, H, D)


class CausalSelfAttention(nn.Module):
    """One attention layer of the record model (docs/record-stack.md §4.3).

    Args:
        cfg: Model configuration.
        layer_idx: Index of the block this layer belongs to (layer 0 gets no value-residual lambdas).
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.num_kv_heads = cfg.num_kv_heads
        self.head_dim = cfg.head_dim
        self.seed_bf16 = cfg.seed_bf16_attention
        # Resolved here, not in forward, so torch.compile sees a plain attribute.
        self._fa3 = flash_attn_3() if cfg.attention_backend in ("auto", "fa3") else None
        if cfg.attention_backend == "fa3" and self._fa3 is None:
            raise ValueError("model.attention_backend: 'fa3' needs the flash_attn_interface package (FlashAttention-3)")
        self.require_fa3 = cfg.attention_backend == "fa3"
        # flex_attention compiled for eager CUDA runs, only where a GPU may pick flex (compiling happens on the first
        # call); resolved here so torch.compile sees a plain attribute
        cuda_flex = torch.cuda.is_available() and segment_backend(cfg.attention_backend, torch.device("cuda")) == "flex"
        self._flex_compiled = compiled_flex_attention() if cuda_flex else None
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        # Registration order mirrors the seed so state_dict order (and so the artifact bytes) match.
        self.c_q = CastedLinear(cfg.model_dim, cfg.model_dim, bias=False)
        self.c_k = CastedLinear(cfg.model_dim, kv_dim, bias=False)
        self.c_v = CastedLinear(cfg.model_dim, kv_dim, bias=False)
        self.proj = CastedLinear(cfg.model_dim, cfg.model_dim, bias=False)
        self.proj._zero_init = True
        # Per-head query gain (record 2026-03-20 lineage, QK_GAIN_INIT).
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init, dtype=torch.float32))
        self.rotary = Rotary(cfg.rope_dims or cfg.head_dim, cfg.rope_base, cfg.rope_train_seq_len, cfg.rope_yarn)
        self._fa3_varlen = flash_attn_3_varlen() if self._fa3 is not None else None
        self.use_xsa = layer_idx >= cfg.num_layers - cfg.xsa_last_n
        # Value residual (arXiv:2410.17897): layers >= 1 mix in layer 0's raw values; layer 0 has no lambdas.
        self.mix_v0 = cfg.value_residual and layer_idx > 0
        if self.mix_v0:
            self.vr_lambda = nn.Parameter(torch.tensor([0.5, 0.5], dtype=torch.float32))
        # Gated attention (arXiv:2505.06708): one sigmoid gate per head and token; the variant picks its form.
        self.attn_gate = None
        self.gate_variant = cfg.attn_gate_variant if cfg.gated_attention else None
        self.gate_window = cfg.gate_window
        self.sparse_gate_scale = cfg.sparse_attn_gate_scale
        if self.gate_variant == "base":
            self.attn_gate = nn.Linear(cfg.model_dim, cfg.num_heads, bias=True)
            nn.init.zeros_(self.attn_gate.weight)
            nn.init.constant_(self.attn_gate.bias, cfg.attn_gate_bias_init)
        elif self.gate_variant == "dense_g1":  # dense G1 gate, N(0, 0.005^2) (0419-QGate, PR #1736)
            self.attn_gate_w = nn.Parameter(torch.randn(cfg.num_heads, cfg.model_dim) * 0.005)
        elif self.gate_variant in ("sparse", "out_gate"):  # SparseAttnGate (PR #1787) / AttnOutGate (PR #1667)
            self.attn_gate_w = nn.Parameter(torch.zeros(cfg.num_heads, cfg.gate_window))

    def gate(self, u: Tensor) -> Tensor | None:
        """Per-head, per-token output gate (B, T, H, 1) of the configured variant, or None without a gate."""
        v = self.gate_variant
        if v is None:
            return None
        if v == "base":
            return torch.sigmoid(self.attn_gate(u)).unsqueeze(-1)
        if v == "dense_g1":
            return torch.sigmoid(F.linear(u, self.attn_gate_w.to(u.dtype))).unsqueeze(-1)
        logits = F.linear(u[..., : self.gate_window], self.attn_gate_w.to(u.dtype))
        if v == "sparse":
            return torch.sigmoid(self.sparse_gate_scale * logits).unsqueeze(-1)
        return (2.0 * torch.sigmoid(logits)).unsqueeze(-1)  # out_gate

    def _attend_segments(self, q: Tensor, k: Tensor, v: Tensor, seg: Segments) -> Tensor:
        """Causal attention that never crosses a segment of ``seg`` (B, T, H|Hkv, D) -> (B, T, H, D).

        FlashAttention-3's varlen kernel on CUDA when installed (0410-VarLen, PR #1530); else flex_attention with
        the document block mask when the GPT built one (``segment_backend``: CUDA without FA3, or an explicit
        'flex'); else SDPA with a block-diagonal causal boolean mask, O(T^2) memory per row (CPU, short rows).
        """
        B, T = q.shape[:2]
        if seg.block_mask is not None:
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|Hkv, T, D)
            gqa = self.num_heads != self.num_kv_heads
            if torch.compiler.is_compiling():  # traced into the compiled model's graph: the fused kernel
                y = flex_attention(q, k, v, block_mask=seg.block_mask, enable_gqa=gqa)
            elif q.is_cuda and self._flex_compiled is not None:  # eager model on a GPU: compile flex on its own
                y = self._flex_compiled(q, k, v, block_mask=seg.block_mask, enable_gqa=gqa)
            else:  # eager flex (forward only on the CPU); its "use torch.compile" warning is expected here
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
                    y = flex_attention(q, k, v, block_mask=seg.block_mask, enable_gqa=gqa)
            return y.transpose(1, 2)
        if self._fa3_varlen is not None and (q.is_cuda or self.require_fa3):
            flat = [t.reshape(B * T, *t.shape[2:]).bfloat16() for t in (q, k, v)]
            cu = seg.cu_seqlens.to(torch.int32)
            out = self._fa3_varlen(*flat, cu, cu, seg.max_seqlen, seg.max_seqlen, causal=True)
            out = out[0] if isinstance(out, tuple) else out
            return out.reshape(B, T, *out.shape[1:])
        ids = seg.segment
        idx = torch.arange(T, device=q.device)
        mask = (ids[:, :, None] == ids[:, None, :]) & (idx[None, :, None] >= idx[None, None, :])  # (B, T, T)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None], enable_gqa=self.num_heads != self.num_kv_heads
        )
        return y.transpose(1, 2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Causal attention on (B, T, H|Hkv, D) tensors, returning (B, T, H, D)."""
        if self._fa3 is not None and (q.is_cuda or self.require_fa3):
            out = self._fa3(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True)  # FlashAttention-3 (Hopper)
            return out[0] if isinstance(out, tuple) else out
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|Hkv, T, D)
        if self.seed_bf16:  # the seed's exact op sequence: bf16 inputs, K/V repeated per query head
            rep = self.num_heads // self.num_kv_heads
            q, k, v = (
                q.bfloat16(),
                k.bfloat16().repeat_interleave(rep, dim=1),
                v.bfloat16().repeat_interleave(rep, dim=1),
            )
            return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
        # SDPA with native GQA: K/V are not materialised per query head.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.num_heads != self.num_kv_heads)
        return y.transpose(1, 2)  # (B, T, H, D)

    def forward(self, u: Tensor, v0: Tensor | None, seg: Segments | None = None) -> tuple[Tensor, Tensor]:
        """Attend over the normalised block input ``u`` (B, T, C).

        Args:
            u: Normalised (and LN-scaled) block input.
            v0: Layer 0's raw values (B, T, Hkv, D), or None in layer 0 / without value residual.
            seg: Document packing: attention stays inside each segment (RoPE positions as ``seg.position``).

        Returns:
            ``(out, raw_v)``: the projected output (B, T, C) and this layer's raw values (B, T, Hkv, D).
        """
        B, T, C = u.shape
        q = self.c_q(u).reshape(B, T, self.num_heads, self.head_dim)
        k = self.c_k(u).reshape(B, T, self.num_kv_heads, self.head_dim)
        raw_v = self.c_v(u).reshape(B, T, self.num_kv_heads, self.head_dim)
        v = raw_v
        if self.mix_v0 and v0 is not None:
            lam = self.vr_lambda.to(v.dtype)
            v = lam[0] * v0 + lam[1] * v
        q, k = rms_norm(q), rms_norm(k)  # QK-norm
        cos, sin = self.rotary(T, u.device, q.dtype, None if seg is None else seg.position)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = self._attend(q, k, v) if seg is None else self._attend_segments(q, k, v, seg)
        if self.use_xsa:  # per position (the token's own value): never reaches across a segment
            y = exclusive_self_attention(y, v)
        gate = self.gate(u)
        if gate is not None:
            y = y * gate  # (B, T, H, 1)
        return self.proj(y.reshape(B, T, C)), raw_v

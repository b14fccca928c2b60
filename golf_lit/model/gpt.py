"""The record GPT (docs/record-stack.md §4-5): U-Net skips, GQA attention with every trick, LeakyReLU² MLP, tied
softcapped head.

Leaderboard-top options (docs/top-stack.md §3): depth recurrence, sigmoid skip gates, two-lane parallel
residuals, attention-gate variants, the BOS-fixed SmearGate and document-masked attention.
``GPT.forward(input_ids)`` returns logits; ``GPT.forward(input_ids, targets=y)`` the mean training loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf_lit.model.attention import CausalSelfAttention, Segments, document_block_mask, segment_backend
from golf_lit.model.config import ModelConfig
from golf_lit.model.layers import CastedLinear, rms_norm, segment_positions
from golf_lit.model.losses import mean_nll, softcapped_cross_entropy


class SmearGate(nn.Module):
    """x_t <- (1-g) x_t + g x_{t-1} with x_{-1} = 0 and g = sigmoid(gate) (record 2026-03-19 SmearGate)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate.to(x.dtype))[None, None, :]
        x_prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)  # (B, T, C) shifted right by one
        return (1 - g) * x + g * x_prev


class BOSSmearGate(nn.Module):
    """e_t <- e_t + lam * sigmoid(w . e_t[:window]) * e_(t-1), except where ids_t is BOS (docs/top-stack.md §3.7).

    Applied to the raw token embedding; position 0 of each row is unchanged and a document's BOS never takes
    the previous document's last token. Zero init (lam = 0): the identity. Origin: 0416-Smear (PR #1667),
    BOS fix 0427-1851 (PR #1851).
    """

    def __init__(self, window: int, bos_id: int) -> None:
        super().__init__()
        self.window = window
        self.bos_id = bos_id
        self.gate_w = nn.Parameter(torch.zeros(1, window, dtype=torch.float32))
        self.lam = nn.Parameter(torch.zeros((), dtype=torch.float32))

    def forward(self, e: Tensor, ids: Tensor) -> Tensor:
        cur = e[:, 1:]
        gate = self.lam.to(e.dtype) * torch.sigmoid(F.linear(cur[..., : self.window], self.gate_w.to(e.dtype)))
        keep = (ids[:, 1:] != self.bos_id).unsqueeze(-1).to(e.dtype)  # (B, T-1, 1)
        return torch.cat([e[:, :1], cur + gate * keep * e[:, :-1]], dim=1)


class BigramHash(nn.Module):
    """Hashed embedding of (previous, current) token pairs (record 2026-03-20 SmearGate+BigramHash).

    Bucket ``((36313 * cur) XOR (27191 * prev)) mod (size - 1)`` in int32; the last bucket is reserved for
    position 0 of every sequence/window, which has no previous token.
    """

    def __init__(self, num_buckets: int, dim: int, model_dim: int) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.embed = nn.Embedding(num_buckets, dim)
        nn.init.zeros_(self.embed.weight)
        self.proj = CastedLinear(dim, model_dim, bias=False) if dim != model_dim else None
        if self.proj is not None:
            nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(0.05, dtype=torch.float32))

    def buckets(self, ids: Tensor) -> Tensor:
        """Bucket index of every position of ``ids`` (B, T) as int64."""
        t = ids.to(torch.int32)
        mod = self.num_buckets - 1
        pairs = torch.bitwise_xor(36313 * t[..., 1:], 27191 * t[..., :-1]) % mod  # (B, T-1)
        first = torch.full_like(t[..., :1], mod)  # reserved bucket for position 0
        return torch.cat([first, pairs], dim=-1).long()

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(self.buckets(ids))
        if self.proj is not None:
            h = self.proj(h)
        return h * self.scale.to(h.dtype)


class MLP(nn.Module):
    """``proj(act(fc(u))^2)`` with act LeakyReLU(slope) (PR #638 lineage) or ReLU (modded-nanogpt ReLU²)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = CastedLinear(cfg.model_dim, cfg.mlp_hidden, bias=False)
        self.proj = CastedLinear(cfg.mlp_hidden, cfg.model_dim, bias=False)
        self.proj._zero_init = True
        self.slope = cfg.leaky_slope if cfg.leaky_relu else None

    def forward(self, u: Tensor) -> Tensor:
        h = self.fc(u)
        h = F.leaky_relu(h, self.slope) if self.slope is not None else torch.relu(h)
        return self.proj(h.square())


class HeadTap(nn.Module):
    """Identity hook point of the output head: ``forward(logits, hidden) -> logits``.

    The model's declared interface to its final hidden state: ``hidden`` (B, T, ``in_features``) is the final
    normalized hidden state, the tensor the head multiplies (``GPT.hidden``: with parallel residuals the lane
    mean, or the lane ``parallel_final_lane`` picks), and ``logits`` (B, T, ``out_features``) the head's output
    before the softcap. A forward hook here (phased TTT's head LoRA, golf_lit.eval.strategies.lora) reads one
    and may add to the other; without hooks it is the identity on ``logits``.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features

    def forward(self, logits: Tensor, hidden: Tensor) -> Tensor:
        return logits


class Block(nn.Module):
    """Pre-norm block with residual mixing toward the embedding stream and fixed LN scale
    (docs/record-stack.md §4.2)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))).float())
        # LN scale 1/sqrt(layer+1) (record 2026-03-21, PR #287/#315 lineage).
        self.ln_scale = 1.0 / math.sqrt(layer_idx + 1) if cfg.ln_scale else 1.0

    def forward(
        self, x: Tensor, x0: Tensor, v0: Tensor | None, seg: Segments | None = None
    ) -> tuple[Tensor, Tensor]:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        attn_out, raw_v = self.attn(rms_norm(x) * self.ln_scale, v0, seg)
        x = x + self.attn_scale.to(x.dtype)[None, None, :] * attn_out
        x = x + self.mlp_scale.to(x.dtype)[None, None, :] * self.mlp(rms_norm(x) * self.ln_scale)
        return x, raw_v

    def forward_parallel(
        self,
        lane0: Tensor,
        lane1: Tensor,
        x0: Tensor,
        v0: Tensor | None,
        seg: Segments | None,
        post: Tensor,
        resid: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Two-lane block (docs/top-stack.md §3.5; PR #1529): attention reads lane 0 mixed with x0, the MLP reads
        lane 1; ``post[src, dst]`` (src 0 = attention, 1 = MLP) and ``resid[dst]`` weight the writes.

        Returns:
            ``(lane0, lane1, raw_v)``.
        """
        dt = lane0.dtype
        mix = self.resid_mix.to(dt)
        attn_in = mix[0][None, None, :] * lane0 + mix[1][None, None, :] * x0
        attn_out, raw_v = self.attn(rms_norm(attn_in) * self.ln_scale, v0, seg)
        a = self.attn_scale.to(dt)[None, None, :] * attn_out
        m = self.mlp_scale.to(dt)[None, None, :] * self.mlp(rms_norm(lane1) * self.ln_scale)
        post, resid = post.to(dt), resid.to(dt)
        new0 = resid[0] * lane0 + post[0, 0] * a + post[1, 0] * m
        new1 = resid[1] * lane1 + post[0, 1] * a + post[1, 1] * m
        return new0, new1, raw_v


class GPT(nn.Module):
    """The record language model. ``forward(input_ids)`` -> softcapped logits (B, T, vocab_size).

    Depth recurrence (``cfg.num_loops``): ``looping_active`` starts True, the form that is exported, evaluated
    and test-time trained; ``GolfLM`` switches it off for training until ``callbacks.LoopingSwitch`` turns it
    on at ``cfg.enable_looping_at``. Both forms use every parameter (DDP needs no unused-parameter search).

    Args:
        cfg: Model configuration (record defaults).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Registration (and so RNG and state_dict) order mirrors the seed.
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.bigram = (
            BigramHash(cfg.bigram_vocab_size, cfg.bigram_dim, cfg.model_dim) if cfg.bigram_vocab_size else None
        )
        self.smear = None
        if cfg.smear_gate:
            base = cfg.smear_gate_variant == "base"
            self.smear = SmearGate(cfg.model_dim) if base else BOSSmearGate(cfg.gate_window, cfg.bos_id)
        self.num_encoder_layers = cfg.num_layers // 2
        self.num_decoder_layers = cfg.num_layers - self.num_encoder_layers
        self.looping_active = cfg.num_loops > 0
        self.skip_weights = None
        self.skip_gates = None
        if cfg.unet_skips:  # U-Net skips (record 2026-03-17 lineage / modded-nanogpt)
            virtual = len(cfg.looped_order)  # sized for the looped layout (docs/top-stack.md §3.4)
            num_skips = min(virtual // 2, virtual - virtual // 2)
            self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.model_dim, dtype=torch.float32))
            if cfg.skip_gates_enabled:  # sigmoid skip gates (0401-V4096, PR #1218 from PR #1089)
                self.skip_gates = nn.Parameter(torch.zeros(num_skips, cfg.model_dim, dtype=torch.float32))
        # Two-lane parallel residuals: lambdas exist only for the blocks that use them (rows = block - start), so
        # every parameter takes part in every step (docs/top-stack.md §3.5, §7; TOP keeps unused rows 0..7).
        self.parallel_start = cfg.parallel_start_layer if cfg.parallel_start_layer is not None else cfg.num_layers
        self.parallel_post_lambdas = None
        self.parallel_resid_lambdas = None
        if self.parallel_start < cfg.num_layers:
            rows = cfg.num_layers - self.parallel_start
            self.parallel_post_lambdas = nn.Parameter(torch.ones(rows, 2, 2, dtype=torch.float32))
            self.parallel_resid_lambdas = nn.Parameter(torch.full((rows, 2), 1.1, dtype=torch.float32))
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.num_layers)])
        # Whether packed rows build a flex_attention block mask, per device type (resolved here for torch.compile).
        self._flex_segments = {
            kind: segment_backend(cfg.attention_backend, torch.device(kind)) == "flex" for kind in ("cpu", "cuda")
        }
        self.lm_head = None
        if not cfg.tie_embeddings:
            self.lm_head = CastedLinear(cfg.model_dim, cfg.vocab_size, bias=False)
            self.lm_head._zero_init = True
        self.head_tap = HeadTap(cfg.model_dim, cfg.vocab_size)  # no parameters: state_dict and RNG unchanged
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialisation of docs/record-stack.md §5: tied tok_emb N(0, std²); zero-init projections; orthogonal
        other matrices."""
        if self.cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)
        for name, module in self.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            if getattr(module, "_zero_init", False):
                nn.init.zeros_(module.weight)
            elif module.weight.shape[0] >= 64 and module.weight.shape[1] >= 64:
                nn.init.orthogonal_(module.weight, gain=1.0)
                if name.endswith(".proj"):  # only bigram.proj reaches this branch
                    module.weight.mul_(1.0 / math.sqrt(2 * self.cfg.num_layers))

    def set_looping(self, active: bool) -> None:
        """Run the looped virtual layer order (True) or the plain one (False); a no-op without num_loops."""
        self.looping_active = bool(active)

    def layer_order(self) -> list[int]:
        """Physical block index of every virtual layer of the current form (encoder = first half, rounded down)."""
        return self.cfg.looped_order if self.looping_active else list(range(self.cfg.num_layers))

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token + bigram embedding, normalised and smeared: the stream x0 (B, T, C).

        What crosses a document boundary (BOS) in a packed row: BigramHash hashes (previous, current) at every
        position and the base SmearGate blends the previous position in, so both carry the last token of a
        document into the next one's BOS. The ``gated_bos`` SmearGate does not.
        """
        x = self.tok_emb(input_ids)
        gated_bos = isinstance(self.smear, BOSSmearGate)
        if gated_bos:
            x = self.smear(x, input_ids)
        if self.bigram is not None:
            x = x + self.bigram(input_ids)
        x = rms_norm(x)
        return self.smear(x) if self.smear is not None and not gated_bos else x

    def hidden(self, input_ids: Tensor, seg: Segments | None = None) -> Tensor:
        """Final-norm output (B, T, C): the input of the output head."""
        x0 = self.embed(input_ids)
        order = self.layer_order()
        num_encoder = len(order) // 2
        lane0, lane1 = x0, None  # lane1 exists once the first parallel block is reached
        v0 = None
        skips: list[Tensor] = []
        for pos, idx in enumerate(order):
            block = self.blocks[idx]
            if idx >= self.parallel_start and lane1 is None:
                # The lanes split before this block's skip: lane0 = lane1 = x, then the skip goes to lane 0 only
                # (docs/top-stack.md §3.5, the record's order).
                lane1 = lane0
            if pos >= num_encoder and self.skip_weights is not None and skips:
                i = pos - num_encoder  # LIFO pairing: first decoder layer <- last encoder layer
                skip = self.skip_weights[i].to(lane0.dtype)[None, None, :] * skips.pop()
                if self.skip_gates is None:
                    lane0 = lane0 + skip
                else:
                    g = torch.sigmoid(self.skip_gates[i].to(lane0.dtype))[None, None, :]
                    lane0 = g * lane0 + (1 - g) * skip
            if idx >= self.parallel_start:
                row = idx - self.parallel_start
                lane0, lane1, raw_v = block.forward_parallel(
                    lane0, lane1, x0, v0, seg, self.parallel_post_lambdas[row], self.parallel_resid_lambdas[row]
                )
            else:
                lane0, raw_v = block(lane0, x0, v0, seg)
            if v0 is None and self.cfg.value_residual:
                v0 = raw_v
            if pos < num_encoder:
                skips.append(lane0)
        x = lane0
        if lane1 is not None:
            final = self.cfg.parallel_final_lane
            x = 0.5 * (lane0 + lane1) if final == "mean" else lane1 if final == "lane1" else lane0
        return rms_norm(x)

    def forward(
        self,
        input_ids: Tensor,
        cu_seqlens: Tensor | None = None,
        targets: Tensor | None = None,
        *,
        max_seqlen: int | None = None,
    ) -> Tensor:
        """Logits (B, T, vocab_size) for ``input_ids`` (B, T), or the mean NLL when ``targets`` is given.

        Position t sees only ids[:, :t+1]. With ``cu_seqlens`` (int32 segment starts of the flattened batch
        ending with B*T; every row start a segment start; trailing repeats allowed) attention never crosses a
        segment; RoPE positions are the index in the row (``cfg.rope_positions='flat'``, the record's,
        docs/top-stack.md §2.5) or restart at 0 in every segment ('per_document'). ``max_seqlen`` bounds a
        segment's length for FlashAttention-3's varlen kernel (default T). The loss is the fused softcapped
        cross-entropy when ``cfg.fused_ce_enabled``, else the eager one; both in fp32.
        """
        seg = None
        if cu_seqlens is not None:
            B, T = input_ids.shape
            cu_seqlens = cu_seqlens.to(input_ids.device)
            segment, position = segment_positions(cu_seqlens, B, T)
            position = position if self.cfg.rope_positions == "per_document" else None  # None: 0..T-1 per row
            flex = self._flex_segments.get(input_ids.device.type, False)
            block_mask = document_block_mask(segment) if flex else None  # built once, shared by every layer
            seg = Segments(cu_seqlens, segment, position, max_seqlen or T, block_mask)
        x = self.hidden(input_ids, seg)
        head = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        logits = self.head_tap(F.linear(x, head.to(x.dtype)), x)
        cap = self.cfg.logit_softcap
        if targets is not None and self.cfg.fused_ce_enabled:
            return softcapped_cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), cap)
        logits = cap * torch.tanh(logits / cap)
        return logits if targets is None else mean_nll(logits, targets)

    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())

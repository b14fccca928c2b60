"""The record GPT (SPEC §4-5): U-Net skips, GQA attention with every trick, LeakyReLU² MLP, tied softcapped head.

``GPT.forward(input_ids)`` returns logits; the loss lives in ``golf_lit.losses``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf_lit.config import ModelConfig
from golf_lit.model.attention import CausalSelfAttention
from golf_lit.model.layers import CastedLinear, rms_norm


class SmearGate(nn.Module):
    """x_t <- (1-g) x_t + g x_{t-1} with x_{-1} = 0 and g = sigmoid(gate) (record 2026-03-19 SmearGate)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate.to(x.dtype))[None, None, :]
        x_prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)  # (B, T, C) shifted right by one
        return (1 - g) * x + g * x_prev


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


class Block(nn.Module):
    """Pre-norm block with residual mixing toward the embedding stream and fixed LN scale (SPEC §4.2)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))).float())
        # LN scale 1/sqrt(layer+1) (record 2026-03-21, PR #287/#315 lineage).
        self.ln_scale = 1.0 / math.sqrt(layer_idx + 1) if cfg.ln_scale else 1.0

    def forward(self, x: Tensor, x0: Tensor, v0: Tensor | None) -> tuple[Tensor, Tensor]:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        attn_out, raw_v = self.attn(rms_norm(x) * self.ln_scale, v0)
        x = x + self.attn_scale.to(x.dtype)[None, None, :] * attn_out
        x = x + self.mlp_scale.to(x.dtype)[None, None, :] * self.mlp(rms_norm(x) * self.ln_scale)
        return x, raw_v


class GPT(nn.Module):
    """The record language model. ``forward(input_ids)`` -> softcapped logits (B, T, vocab_size).

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
        self.smear = SmearGate(cfg.model_dim) if cfg.smear_gate else None
        self.num_encoder_layers = cfg.num_layers // 2
        self.num_decoder_layers = cfg.num_layers - self.num_encoder_layers
        self.skip_weights = None
        if cfg.unet_skips:  # U-Net skips (record 2026-03-17 lineage / modded-nanogpt)
            num_skips = min(self.num_encoder_layers, self.num_decoder_layers)
            self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.model_dim, dtype=torch.float32))
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.num_layers)])
        self.lm_head = None
        if not cfg.tie_embeddings:
            self.lm_head = CastedLinear(cfg.model_dim, cfg.vocab_size, bias=False)
            self.lm_head._zero_init = True
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialisation of SPEC §5: tied tok_emb N(0, std²); zero-init projections; orthogonal other matrices."""
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

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token + bigram embedding, normalised and smeared: the stream x0 (B, T, C)."""
        x = self.tok_emb(input_ids)
        if self.bigram is not None:
            x = x + self.bigram(input_ids)
        x = rms_norm(x)
        return self.smear(x) if self.smear is not None else x

    def forward(self, input_ids: Tensor) -> Tensor:
        """Logits (B, T, vocab_size) for ``input_ids`` (B, T); position t sees only ids[:, :t+1]."""
        x = x0 = self.embed(input_ids)
        v0 = None
        skips: list[Tensor] = []
        for block in self.blocks[: self.num_encoder_layers]:
            x, raw_v = block(x, x0, v0)
            if v0 is None and self.cfg.value_residual:
                v0 = raw_v
            skips.append(x)
        for i, block in enumerate(self.blocks[self.num_encoder_layers :]):
            if self.skip_weights is not None and skips:  # LIFO pairing: first decoder block <- last encoder
                x = x + self.skip_weights[i].to(x.dtype)[None, None, :] * skips.pop()
            x, _ = block(x, x0, v0)
        x = rms_norm(x)
        head = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(x, head.to(x.dtype))
        cap = self.cfg.logit_softcap
        return cap * torch.tanh(logits / cap)

    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())

"""The record GPT: names, size, shapes, causality with every trick, and each flag's plain variant."""

from __future__ import annotations

import math

import pytest
import torch

from golf_lit.model.attention import exclusive_self_attention
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT, BigramHash
from golf_lit.model.layers import Rotary, apply_rotary

from .conftest import tiny_config


def record_names(num_layers: int = 11) -> set[str]:
    names = {
        "tok_emb.weight",
        "bigram.embed.weight",
        "bigram.proj.weight",
        "bigram.scale",
        "smear.gate",
        "skip_weights",
    }
    for i in range(num_layers):
        names |= {
            f"blocks.{i}.{n}" for n in ("attn_scale", "mlp_scale", "resid_mix", "mlp.fc.weight", "mlp.proj.weight")
        }
        attn = ["q_gain", "c_q.weight", "c_k.weight", "c_v.weight", "proj.weight", "attn_gate.weight", "attn_gate.bias"]
        names |= {f"blocks.{i}.attn.{n}" for n in attn + (["vr_lambda"] if i else [])}
    return names


def test_record_config_size_and_names():
    model = GPT(ModelConfig())
    assert model.num_parameters() == 27_137_221  # the seed's 27,137,223 less layer 0's two unused lambdas
    assert set(model.state_dict()) == record_names()
    assert "blocks.0.attn.vr_lambda" not in model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["blocks.3.attn.c_k.weight"] == (256, 512) and shapes["blocks.3.mlp.fc.weight"] == (1536, 512)
    assert shapes["bigram.embed.weight"] == (4096, 128) and shapes["skip_weights"] == (5, 512)


def test_init_values():
    torch.manual_seed(0)
    model = GPT(tiny_config(model_dim=64, bigram_dim=64))
    sd = model.state_dict()
    assert torch.all(sd["blocks.0.attn.proj.weight"] == 0) and torch.all(sd["blocks.1.mlp.proj.weight"] == 0)
    assert torch.all(sd["blocks.1.attn.vr_lambda"] == 0.5) and torch.all(sd["blocks.0.attn.q_gain"] == 1.5)
    assert torch.all(sd["blocks.0.attn.attn_gate.bias"] == 4.0) and torch.all(sd["blocks.0.attn.attn_gate.weight"] == 0)
    assert torch.all(sd["blocks.0.resid_mix"][0] == 1) and torch.all(sd["blocks.0.resid_mix"][1] == 0)
    assert torch.all(sd["smear.gate"] == 0) and torch.all(sd["bigram.embed.weight"] == 0)
    q = sd["blocks.0.attn.c_q.weight"]
    torch.testing.assert_close(q @ q.T, torch.eye(64), atol=1e-5, rtol=0)  # orthogonal
    big = GPT(ModelConfig(num_layers=2, xsa_last_n=2))
    p = big.state_dict()["bigram.proj.weight"]  # (512, 128): orthogonal columns scaled by 1/sqrt(2L)
    torch.testing.assert_close(p.T @ p, torch.eye(128) / 4, atol=1e-5, rtol=0)
    assert big.state_dict()["tok_emb.weight"].std().item() == pytest.approx(0.005, rel=0.05)


def test_forward_shapes_and_dtypes(tiny_model_config):
    model = GPT(tiny_model_config)
    ids = torch.randint(0, 64, (3, 12))
    logits = model(ids)
    assert logits.shape == (3, 12, 64) and logits.dtype == torch.float32
    assert logits.abs().max() <= 30.0  # softcap


def _randomize(model: GPT) -> GPT:
    """Give every parameter (zero-init ones included) generic values so each trick is active."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.5 if p.ndim < 2 else 0.2))
    return model


def test_causality_with_every_trick():
    model = _randomize(GPT(tiny_config(num_layers=4, xsa_last_n=4)))
    ids = torch.randint(0, 64, (2, 24))
    base = model(ids)
    for t in (0, 5, 23):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 7) % 64
        out = model(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=0)  # earlier positions bit-identical
        assert not torch.allclose(out[:, t], base[:, t])  # and the change is visible at t
    # window starts: a sequence that is a suffix starts with the reserved bigram bucket and zero smear. A 16-token
    # and a 1-token forward differ only in matmul blocking (summation order): in fp32 that is a few ulps of logits
    # up to 30 (1 ulp = 1.9e-6 there), machine-dependent. In float64 the same reordering is ~1e-15, while any leak of
    # the dropped prefix moves logits by O(1) (see test_window_start_leak_is_visible_in_float64), so 1e-9 separates
    # the two by six orders of magnitude either way.
    m64 = model.double()
    torch.testing.assert_close(m64(ids[:, 8:])[:, 0], m64(ids[:, 8:9])[:, 0], rtol=0, atol=1e-9)


def test_window_start_leak_is_visible_in_float64():
    """The contrast for the check above: a window that keeps one more token of prefix differs by far more than 1e-9."""
    model = _randomize(GPT(tiny_config(num_layers=4, xsa_last_n=4))).double()
    ids = torch.randint(0, 64, (2, 24))
    assert (model(ids[:, 7:])[:, 1] - model(ids[:, 8:9])[:, 0]).abs().max() > 1e-3


def _plain_equivalent(on_cfg: ModelConfig, off_cfg: ModelConfig, neutralise) -> None:
    on = _randomize(GPT(on_cfg))
    neutralise(on)
    off = GPT(off_cfg)
    missing, unexpected = off.load_state_dict(on.state_dict(), strict=False)
    assert not missing
    ids = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(on(ids), off(ids), rtol=1e-5, atol=1e-5)
    return unexpected


def test_flags_off_give_plain_variants():
    def set_(name, value):
        def f(model):
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n.endswith(name):
                        p.fill_(value) if not isinstance(value, list) else p.copy_(torch.tensor(value))

        return f

    cases = [
        ({"value_residual": False}, set_("vr_lambda", [0.0, 1.0]), "vr_lambda"),
        (
            {"gated_attention": False},
            lambda m: (set_("attn_gate.weight", 0.0)(m), set_("attn_gate.bias", 100.0)(m)),
            "attn_gate",
        ),
        ({"smear_gate": False}, set_("smear.gate", -200.0), "smear"),
        ({"bigram_vocab_size": 0}, set_("bigram.scale", 0.0), "bigram"),
        ({"unet_skips": False}, set_("skip_weights", 0.0), "skip_weights"),
    ]
    for flag, neutralise, key in cases:
        unexpected = _plain_equivalent(tiny_config(), tiny_config(**flag), neutralise)
        assert unexpected and all(key in u for u in unexpected), (flag, unexpected)
    # parameter-free flags: LeakyReLU(0)^2 is ReLU^2; XSA off / LN scale off change the function
    _plain_equivalent(tiny_config(leaky_slope=0.0), tiny_config(leaky_relu=False), lambda m: None)
    ids = torch.randint(0, 64, (1, 16))
    for flag in ({"xsa_last_n": 0}, {"ln_scale": False}, {"rope_dims": 0}):
        a, b = _randomize(GPT(tiny_config())), GPT(tiny_config(**flag))
        b.load_state_dict(a.state_dict())
        assert not torch.allclose(a(ids), b(ids)), flag
    assert [blk.attn.use_xsa for blk in GPT(tiny_config(num_layers=4, xsa_last_n=1)).blocks] == [False] * 3 + [True]


def test_xsa_removes_own_value_direction():
    y, v = torch.randn(2, 5, 8, 16), torch.randn(2, 5, 4, 16)
    out = exclusive_self_attention(y, v)
    v_rep = v.repeat_interleave(2, dim=2)  # head h belongs to KV group h // 2
    dots = (out * v_rep).sum(-1)
    assert dots.abs().max() < 1e-5
    # the removed part is parallel to v: out + <y, v_hat> v_hat == y
    v_hat = torch.nn.functional.normalize(v_rep, dim=-1)
    torch.testing.assert_close(out + (y * v_hat).sum(-1, keepdim=True) * v_hat, y)


def test_partial_rope_and_ntk_base():
    rot = Rotary(16, 10000.0, 1024)
    assert rot.inv_freq(1024)[1].item() == pytest.approx(10000.0 ** (-2 / 16), rel=1e-6)
    effective = 10000.0 * 2 ** (16 / 14)  # ~22,082 at T = 2048 (docs/record-stack.md §4.4)
    assert effective == pytest.approx(22081.8, rel=1e-5)
    assert rot.inv_freq(2048)[1].item() == pytest.approx(effective ** (-2 / 16), rel=1e-6)
    x = torch.randn(1, 3, 2, 64)
    cos, sin = rot(3, x.device, x.dtype)
    out = apply_rotary(x, cos, sin)
    torch.testing.assert_close(out[..., 16:], x[..., 16:])  # dims past rope_dims pass through
    torch.testing.assert_close(out[0, 0], x[0, 0])  # position 0 is not rotated
    theta = 2 * rot.inv_freq(3)[0]  # position 2, pair (0, 8)
    c, s = math.cos(theta), math.sin(theta)
    assert out[0, 2, 0, 0].item() == pytest.approx(x[0, 2, 0, 0].item() * c + x[0, 2, 0, 8].item() * s, abs=1e-5)
    assert out[0, 2, 0, 8].item() == pytest.approx(-x[0, 2, 0, 0].item() * s + x[0, 2, 0, 8].item() * c, abs=1e-5)


def test_bigram_hash_by_hand():
    bh = BigramHash(4096, 8, 16)
    ids = torch.tensor([[5, 7, 1000]])
    expected = [4095, ((36313 * 7) ^ (27191 * 5)) % 4095, ((36313 * 1000) ^ (27191 * 7)) % 4095]
    assert bh.buckets(ids).tolist() == [expected]


def test_config_errors_name_the_key():
    for kw, key in [
        ({"num_heads": 7}, "model.num_heads"),
        ({"num_kv_heads": 3}, "model.num_kv_heads"),
        ({"rope_dims": 15}, "model.rope_dims"),
        ({"rope_dims": 128}, "model.rope_dims"),
        ({"xsa_last_n": 12}, "model.xsa_last_n"),
    ]:
        with pytest.raises(ValueError, match=key):
            ModelConfig(**kw)



def test_gqa_attention_matches_repeated_kv_reference():
    """Native-GQA SDPA = attention with K/V repeat-interleaved per query head (query head h uses KV group h // 2)."""
    torch.manual_seed(0)
    model = _randomize(GPT(tiny_config(num_layers=1, xsa_last_n=0, gated_attention=False)))
    attn = model.blocks[0].attn
    q, k, v = torch.randn(2, 9, 4, 8), torch.randn(2, 9, 2, 8), torch.randn(2, 9, 2, 8)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.repeat_interleave(2, 2).transpose(1, 2),
        v.repeat_interleave(2, 2).transpose(1, 2),
        is_causal=True,
    ).transpose(1, 2)
    torch.testing.assert_close(attn._attend(q, k, v), ref, rtol=1e-6, atol=1e-6)


def test_seed_bf16_attention_option():
    a = _randomize(GPT(tiny_config()))
    b = GPT(tiny_config(seed_bf16_attention=True))
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 64, (2, 16))
    out_a, out_b = a(ids), b(ids)
    assert out_b.dtype == torch.float32 and not torch.equal(out_a, out_b)  # q/k/v really went through bf16
    torch.testing.assert_close(out_b, out_a, rtol=0.05, atol=0.05)

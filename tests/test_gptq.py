"""GPTQ, SDClip, LQER, quantized gates (golf_lit/artifact/gptq.py, calibrate.py, lqer.py; docs/top-stack.md §5)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import golf_lit.data.shards as shards
from golf_lit.artifact import lqer
from golf_lit.artifact.calibrate import calibration_batches, collect_hessians
from golf_lit.artifact.gptq import amax_scales, gptq_quantize, quantize_rtn, sdclip_scales
from golf_lit.artifact.quantize import QuantConfig, dequantize_state_dict, quantize_state_dict, tensor_format
from golf_lit.data.paths import SAMPLE_TRAIN_FILES, SAMPLE_VAL_FILES, resolve
from golf_lit.model.gpt import GPT
from tests.conftest import tiny_config


def _correlated(n: int, mix: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Inputs whose columns are strongly correlated: 4 latent factors mixed by ``mix`` (4 x cols) + small noise."""
    return torch.randn(n, 4, generator=g) @ mix + 0.05 * torch.randn(n, mix.shape[1], generator=g)


# ------------------------------------------------------------------------------------------------------ GPTQ


def test_gptq_beats_rtn_on_held_out_correlated_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 64, generator=g)
    mix = torch.randn(4, 64, generator=g)
    x_cal, x_test = _correlated(2048, mix, g), _correlated(2048, mix, g)  # same distribution, other samples
    h = x_cal.T @ x_cal / 4  # four "batches"
    qmax = 7
    s = amax_scales(w, qmax)
    rtn = quantize_rtn(w, s, qmax).float() * s.float()[:, None]
    gq = gptq_quantize(w, h, s, qmax).float() * s.float()[:, None]
    err_rtn = torch.linalg.norm((w - rtn) @ x_test.T)
    err_gptq = torch.linalg.norm((w - gq) @ x_test.T)
    assert err_gptq < 0.25 * err_rtn  # ~0.1 here: the correlated directions absorb the rounding error


def test_gptq_equals_rtn_when_the_hessian_is_the_identity() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(16, 300, generator=g)  # 300 columns: three blocks of 128, the last partial
    s = sdclip_scales(w, 3.0, 31)
    q = gptq_quantize(w, torch.eye(300), s, 31, act_order=False)
    assert torch.equal(q, quantize_rtn(w, s, 31))


def test_gptq_codes_stay_in_range_and_dead_columns_are_zero() -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(8, 40, generator=g)
    x = _correlated(256, torch.randn(4, 40, generator=g), g)
    x[:, 5] = 0.0  # a dead input
    q = gptq_quantize(w, x.T @ x, amax_scales(w, 15), 15)
    assert q.abs().max() <= 15 and torch.all(q[:, 5] == 0)


# ----------------------------------------------------------------------------------------------- calibration


class _Looped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.lin = nn.Linear(6, 6, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        x = self.lin(self.lin(x))  # the same layer twice per pass
        return F.linear(x, self.emb.weight.to(x.dtype))  # tied head


def test_hooks_accumulate_every_call_and_the_tied_head_input() -> None:
    torch.manual_seed(0)
    model = _Looped()
    batches = [torch.randint(0, 10, (2, 5)) for _ in range(3)]
    hs = collect_hessians(model, batches)
    want_lin = torch.zeros(6, 6)
    want_head = torch.zeros(6, 6)
    with torch.no_grad():
        for ids in batches:
            x0 = model.emb(ids).reshape(-1, 6)
            x1 = x0 @ model.lin.weight.T
            want_lin += x0.T @ x0 + x1.T @ x1
            x2 = x1 @ model.lin.weight.T
            want_head += x2.T @ x2
    torch.testing.assert_close(hs["lin.weight"], want_lin / 3)
    torch.testing.assert_close(hs["emb.weight"], want_head / 3)


def test_gpt_hessians_cover_every_quantized_matrix() -> None:
    torch.manual_seed(0)
    model = GPT(tiny_config())
    hs = collect_hessians(model, [torch.randint(0, 64, (2, 8))])
    linears = {f"{n}.weight" for n, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    assert linears | {"tok_emb.weight"} == set(hs)
    for name, h in hs.items():
        assert h.shape[0] == h.shape[1] and torch.allclose(h, h.T)


def test_calibration_never_reads_validation_files(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shards.load_shard
    val = {str(p) for p in shards.find_shards(resolve(SAMPLE_VAL_FILES))}

    def guarded(path):
        assert str(path) not in val, f"calibration read a validation shard: {path}"
        return real(path)

    monkeypatch.setattr(shards, "load_shard", guarded)
    with pytest.raises(AssertionError, match="validation shard"):  # the guard works
        list(calibration_batches(resolve(SAMPLE_VAL_FILES), 1, 64, 32))
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=1024))
    hs = collect_hessians(model, calibration_batches(resolve(SAMPLE_TRAIN_FILES), 2, 64, 32))
    assert "tok_emb.weight" in hs


# ------------------------------------------------------------------------------------------------------ SDClip


def test_sdclip_hand_worked_2x4() -> None:
    w = torch.tensor([[1.0, -1.0, 1.0, -1.0], [0.0, 1.0, 2.0, 10.0]])
    # row 0: mean 0, unbiased var 4/3; row 1: mean 3.25, squared deviations 62.75 -> var 62.75/3
    s = sdclip_scales(w, 2.0, 7)
    want = torch.tensor([2 * math.sqrt(4 / 3) / 7, 2 * math.sqrt(62.75 / 3) / 7]).half()
    assert torch.equal(s, want)  # 0.32983 and 1.30664 in fp16
    q = quantize_rtn(w, s, 7)
    # 1/0.3298 = 3.03 -> 3; 1/1.3066 = 0.77 -> 1; 2/1.3066 = 1.53 -> 2; 10/1.3066 = 7.65 -> clamped to 7
    assert q.tolist() == [[3, -3, 3, -3], [0, 1, 2, 7]]


def test_sdclip_codes_within_qmax_and_per_kind_sigmas() -> None:
    g = torch.Generator().manual_seed(3)
    sd = {
        "blocks.0.mlp.fc.weight": torch.randn(256, 300, generator=g),
        "blocks.0.attn.c_q.weight": torch.randn(256, 300, generator=g),
        "tok_emb.weight": torch.randn(300, 256, generator=g),
    }
    cfg = QuantConfig(sdclip=True, mlp_clip_sigmas=2.0, attn_clip_sigmas=3.0, embed_clip_sigmas=4.0, embed_bits=7)
    w, m = quantize_state_dict(sd, cfg=cfg)
    assert m["tok_emb.weight"] == {"type": "int7"} and m["blocks.0.mlp.fc.weight"] == {"type": "int6"}
    for name, k, qmax in (("blocks.0.mlp.fc.weight", 2.0, 31), ("blocks.0.attn.c_q.weight", 3.0, 31),
                          ("tok_emb.weight", 4.0, 63)):  # fmt: skip
        assert torch.equal(w[f"{name}.scale"], sdclip_scales(sd[name], k, qmax))
        assert w[f"{name}.q"].abs().max() <= qmax
    assert w["blocks.0.mlp.fc.weight.q"].abs().max() == 31  # k=2 clips: some codes sit at the edge


# -------------------------------------------------------------------------------------------------------- LQER


def test_lqer_full_rank_without_factor_quantization_is_exact() -> None:
    g = torch.Generator().manual_seed(4)
    sd = {"blocks.0.mlp.fc.weight": torch.randn(260, 256, generator=g)}
    cfg = QuantConfig(sdclip=True, lqer_rank=256, lqer_top_k=1, lqer_factor_bits=0)
    w, m = quantize_state_dict(sd, cfg=cfg)
    assert m["blocks.0.mlp.fc.weight"]["lqer"] == "fp32"
    back = dequantize_state_dict(w, m, sd)["blocks.0.mlp.fc.weight"]
    # SVD + matmul in fp32 of a matrix with entries ~1: error ~ eps * sqrt(n) * |E|
    torch.testing.assert_close(back, sd["blocks.0.mlp.fc.weight"], atol=2e-5, rtol=0)


def test_lqer_top_k_follows_the_error_norm() -> None:
    g = torch.Generator().manual_seed(5)
    # k (clip sigmas) per kind sets how much each matrix is clipped, hence its error norm: attn >> mlp
    sd = {
        "blocks.0.mlp.fc.weight": torch.randn(256, 300, generator=g),
        "blocks.0.attn.c_q.weight": torch.randn(256, 300, generator=g) * 4,
        "blocks.1.attn.c_k.weight": torch.randn(256, 300, generator=g) * 2,
    }
    w0, m0 = quantize_state_dict(sd, cfg=QuantConfig(sdclip=True))
    plain = dequantize_state_dict(w0, m0, sd)
    norms = {n: float(torch.linalg.matrix_norm(sd[n] - plain[n])) for n in sd}
    top2 = sorted(norms, key=lambda n: -norms[n])[:2]
    w, m = quantize_state_dict(sd, cfg=QuantConfig(sdclip=True, lqer_rank=4, lqer_top_k=2))
    assert sorted(n for n in sd if "lqer" in m[n]) == sorted(top2) == sorted(lqer.choose(norms, 2))
    back = dequantize_state_dict(w, m, sd)
    for n in top2:  # the correction reduces the error
        assert torch.linalg.matrix_norm(sd[n] - back[n]) < norms[n]


@pytest.mark.parametrize("asym", [True, False])
def test_lqer_packings(asym: bool) -> None:
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(40, 4, generator=g), torch.randn(4, 128, generator=g)
    parts, packing = lqer.pack(a, b, asym, 4)
    assert packing == ("asym" if asym else "sym")
    if asym:
        assert parts["A"].min() >= -2 and parts["A"].max() <= 1 and parts["A_scale"].numel() == 1
        assert parts["B"].min() >= -8 and parts["B"].max() <= 7 and parts["B_scale"].numel() == 4 * 128 // 64
        torch.testing.assert_close(parts["A_scale"].float(), (a.abs().max() / 1.5).half().float())
    else:
        assert parts["A"].abs().max() <= 7 and parts["A_scale"].shape == (40,)
    approx = lqer.unpack(parts, packing)
    assert torch.linalg.matrix_norm(approx - a @ b) < torch.linalg.matrix_norm(a @ b)
    _, fallback = lqer.pack(a, torch.randn(4, 30, generator=g), True, 4)
    assert fallback == "sym"  # numel(B) not divisible by 64


# ------------------------------------------------------------------------------------------------------- gates


def test_quant_gate_int8_rows_only_when_enabled() -> None:
    g = torch.Generator().manual_seed(7)
    gate = torch.randn(8, 12, generator=g)
    big = torch.randn(100, 100, generator=g)  # 10,000 elements: above the 8,192 bound
    sd = {"blocks.0.attn.attn_gate_w": gate, "blocks.1.attn.attn_gate_w": big}
    assert tensor_format("blocks.0.attn.attn_gate_w", gate) == "passthrough"
    cfg = QuantConfig(quant_gate=True)
    assert tensor_format("blocks.0.attn.attn_gate_w", gate, cfg=cfg) == "gate_int8"
    assert tensor_format("blocks.1.attn.attn_gate_w", big, cfg=cfg) == "passthrough"
    assert tensor_format("blocks.0.attn.attn_gate_w", torch.randn(31, 1), cfg=cfg) == "passthrough"
    w, m = quantize_state_dict(sd, cfg=cfg)
    assert m["blocks.0.attn.attn_gate_w"] == {"type": "int8"}
    s = w["blocks.0.attn.attn_gate_w.scale"]
    assert torch.equal(s, (gate.abs().amax(dim=1) / 127).half())
    q = w["blocks.0.attn.attn_gate_w.q"]
    assert q.abs().max() == 127 and torch.equal(q, torch.round(gate / s.float()[:, None]).clamp(-127, 127).to(q.dtype))
    back = dequantize_state_dict(w, m, sd)["blocks.0.attn.attn_gate_w"]
    assert torch.all((back - gate).abs() <= s.float()[:, None] / 2 + 1e-6)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"matrix_bits": 4}, "quant.matrix_bits"),
        ({"embed_bits": 9}, "quant.embed_bits"),
        ({"lqer_rank": -1}, "quant.lqer_rank"),
        ({"lqer_factor_bits": 1}, "quant.lqer_factor_bits"),
        ({"gptq_calibration_batches": 0}, "quant.gptq_calibration_batches"),
        ({"gptq_damp": -0.1}, "quant.gptq_damp"),
        ({"mlp_clip_sigmas": 0.0}, "quant.mlp_clip_sigmas"),
        ({"pergroup_backend": "gzip"}, "quant.compressor"),
    ],
)
def test_top_options_are_validated(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        QuantConfig(**kwargs)


def test_gptq_without_a_hessian_and_without_sdclip_is_the_seed_path() -> None:
    g = torch.Generator().manual_seed(8)
    sd = {"blocks.0.mlp.fc.weight": torch.randn(256, 300, generator=g) * 0.5, "tok_emb.weight": torch.randn(300, 256)}
    w0, m0 = quantize_state_dict(sd)
    w1, m1 = quantize_state_dict(sd, cfg=QuantConfig(gptq=True))  # no Hessians given
    assert m0 == m1 and all(torch.equal(w0[k], w1[k]) for k in w0)

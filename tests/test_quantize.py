"""Quantizers and the state-dict format (golf_lit/artifact/quantize.py): hand-computed rows, record table, bounds."""

from __future__ import annotations

import pytest
import torch

from golf_lit.artifact.quantize import (
    GPTQ_LITE_PERCENTILES,
    QuantConfig,
    QuantStateError,
    classify_tensor,
    dequantize_state_dict,
    dequantize_tensor,
    quantize_rows_gptq_lite,
    quantize_rows_int6,
    quantize_rows_int8,
    quantize_state_dict,
    quantize_tensor,
    tensor_format,
)
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from tests.conftest import tiny_config

# fp16 values worked out by hand: fp16 has 10 mantissa bits, so in [2^e, 2^(e+1)) the step is 2^(e-10).
FP16_1_OVER_31 = 0.03125 + 33 * 2**-15  # 1/31 = 0.0322581 -> 33.03 steps above 2^-5
FP16_0_2 = 0.125 + 614 * 2**-13  # 0.2 -> 614.4 steps above 2^-3
FP16_1_OVER_15 = 0.0625 + 68 * 2**-14  # 0.0666667 -> 68.27 steps above 2^-4
FP16_0_4 = 0.25 + 614 * 2**-12
FP16_HALF_OVER_31 = 2**-6 + 33 * 2**-16  # 0.5/31 = 0.0161290 -> 33.03 steps above 2^-6
FP16_0_02 = 2**-6 + 287 * 2**-16  # 0.02 -> 286.72 steps above 2^-6
FP16_1_OVER_127 = 2**-7 + 8 * 2**-17  # 0.00787402 -> 8.06 steps above 2^-7


# ------------------------------------------------------------------------------------------- int6 / int5


def test_int6_hand_rows() -> None:
    rows = torch.tensor(
        [
            [0.5, -1.0, 0.25, 0.0],  # amax 1 -> 1/31 (the floor and amax/31 agree)
            [3.1, -6.2, 1.0, 0.0],  # amax 6.2 -> 0.2
            [0.1, -0.05, 0.0, 0.0],  # amax < 1 -> the floor 1/31, not 0.1/31
            [0.0, 0.0, 0.0, 0.0],  # all zero -> the floor, codes 0
        ]
    )
    q, scale = quantize_rows_int6(rows)
    assert q.dtype == torch.int8 and scale.dtype == torch.float16
    assert scale.tolist() == [FP16_1_OVER_31, FP16_0_2, FP16_1_OVER_31, FP16_1_OVER_31]
    # 0.5/0.0322571 = 15.50 -> 16; -1/0.0322571 = -31.0009 -> -31; 3.1/0.19995 = 15.504 -> 16; 1/0.19995 -> 5;
    # 0.1/0.0322571 = 3.10 -> 3; -0.05/0.0322571 = -1.55 -> -2.
    assert q.tolist() == [[16, -31, 8, 0], [16, -31, 5, 0], [3, -2, 0, 0], [0, 0, 0, 0]]


def test_int5_hand_rows() -> None:
    q, scale = quantize_rows_int6(torch.tensor([[0.5, -1.0, 0.25, 0.0], [6.0, -3.0, 0.0, 0.0]]), qmax=15)
    assert scale.tolist() == [FP16_1_OVER_15, FP16_0_4]
    # 0.5/0.0666504 = 7.502 -> 8; -15.004 -> -15; 3.751 -> 4; 6/0.399902 = 15.004 -> 15; -7.502 -> -8
    assert q.tolist() == [[8, -15, 4, 0], [15, -8, 0, 0]]


def test_scale_floor_is_configurable() -> None:
    row = torch.tensor([[0.1, -0.05]])
    _, seed_scale = quantize_rows_int6(row)
    q, scale = quantize_rows_int6(row, scale_floor_mult=0.5)
    assert seed_scale.item() == FP16_1_OVER_31
    assert scale.item() == FP16_HALF_OVER_31
    assert q.tolist() == [[6, -3]]  # 0.1/0.0161285 = 6.2; -0.05/0.0161285 = -3.1


@pytest.mark.parametrize("qmax", [31, 15])
def test_int6_int5_ranges_and_row_extremes(qmax: int) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 300, generator=g) * torch.logspace(-2, 2, 64)[:, None]  # rows both below and above the floor
    q, scale = quantize_rows_int6(w, qmax=qmax)
    assert q.min() >= -qmax - 1 and q.max() <= qmax
    big = w.abs().amax(dim=1) >= 1.0  # rows whose scale is amax/qmax: their largest |w| maps to |q| = qmax
    assert big.any() and (~big).any()
    assert (q[big].abs().amax(dim=1) == qmax).all()
    assert torch.all(scale[~big] == torch.tensor(1.0 / qmax).half())


def test_int6_roundtrip_error_is_at_most_half_a_step() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(48, 512, generator=g) * 3.0
    q, scale = quantize_rows_int6(w)
    deq = dequantize_tensor(
        "blocks.0.mlp.fc.weight",
        {"blocks.0.mlp.fc.weight.q": q, "blocks.0.mlp.fc.weight.scale": scale},
        {"type": "int6"},
        w,
    )
    step = scale.float()[:, None]
    assert torch.all((w - deq).abs() <= step / 2 + 1e-6)


def test_one_dimensional_int6_uses_one_scale() -> None:
    t = torch.tensor([0.0, 3.1, -6.2])
    q, scale = quantize_rows_int6(t)
    assert scale.ndim == 0 and scale.item() == FP16_0_2 and q.tolist() == [0, 16, -31]
    q0, s0 = quantize_rows_int6(torch.zeros(5))
    assert s0.item() == 1.0 and q0.tolist() == [0] * 5


# -------------------------------------------------------------------------------------------------- int8


def test_int8_hand_rows() -> None:
    # Rows of 4: the 0.9999984 quantile interpolates between the two largest |w|, equal here, so the clip is exact.
    q, scale = quantize_rows_int8(torch.tensor([[2.54, -2.54, 1.0, -0.3], [0.4, -0.2, 0.4, 0.1]]))
    assert scale.dtype == torch.float16
    assert scale.tolist() == [FP16_0_02, FP16_1_OVER_127]  # 2.54/127 = 0.02; 0.4/127 < 1/127 -> floor
    # rounding uses the fp32 scale: 1/0.02 = 50, -0.3/0.02 = -15; 0.4*127 = 50.8 -> 51, -25.4 -> -25, 12.7 -> 13
    assert q.tolist() == [[127, -127, 50, -15], [51, -25, 51, 13]]


def test_int8_clips_a_row_outlier_at_the_percentile() -> None:
    n = 2048
    row = torch.linspace(-1.0, 1.0, n)
    row[7] = 100.0
    q, scale = quantize_rows_int8(row[None, :])
    pos = 0.9999984 * (n - 1)  # linear interpolation between the two largest |w| (1.0 and 100.0)
    clip = 1.0 + (pos - (n - 2)) * 99.0
    assert q[0, 7].item() == 127
    assert scale.float().item() == pytest.approx(clip / 127, rel=1e-3)
    deq = q.float() * scale.float()[:, None]
    assert deq[0, 7].item() == pytest.approx(clip, rel=1e-3) and deq[0, 7].item() < 100.0


def test_int8_roundtrip_bound_inside_the_clip() -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(32, 700, generator=g) * 4.0
    q, scale16 = quantize_rows_int8(w)
    clip = torch.quantile(w.abs(), 0.9999984, dim=1)
    scale32 = (clip / 127).clamp_min(1 / 127)
    deq = q.float() * scale16.float()[:, None]
    inside = w.abs() <= clip[:, None]
    # rounding error of half an fp32 step, plus the fp16 rounding of the stored scale times |q| <= 127
    bound = scale32[:, None] / 2 + 127 * (scale16.float() - scale32).abs()[:, None] + 1e-6
    assert inside.float().mean() > 0.99
    assert torch.all(((w - deq).abs() <= bound)[inside])


def test_int8_non_matrix_uses_one_fp32_scale() -> None:
    t = torch.zeros(3, 4, 5)
    t[0, 0, 0] = 2.54
    t[1, 1, 1] = -2.54
    q, scale = quantize_rows_int8(t)
    assert scale.ndim == 0 and scale.dtype == torch.float32
    assert scale.item() == pytest.approx(2.54 / 127, rel=1e-6)  # the 0.9999984 quantile of |t| sits between two 2.54s
    assert q[0, 0, 0] == 127 and q[1, 1, 1] == -127 and int(q.abs().sum()) == 254


# ------------------------------------------------------------------------------------------------ GPTQ-lite


def _row_with_outlier(base: float, outlier: float, n: int = 4096) -> torch.Tensor:
    row = torch.full((n,), base)
    row[1::2] = -base
    row[5] = outlier
    return row


def test_gptq_lite_clips_a_lone_outlier() -> None:
    # |w| = 15.5 everywhere but one 31, rows of 200,000: every quantile < 1 of |w| is 15.5 (even 0.99999 lands
    # between the two largest 15.5s), giving scale 0.5 and exact codes except the clipped outlier
    # (MSE 15.5^2/200,000 = 0.0012). The row max gives scale 1, so every 15.5 rounds half-to-even to 16
    # (MSE 0.25). All quantiles < 1 tie; the first, 0.999, is kept.
    w = torch.stack([_row_with_outlier(15.5, 31.0, n=200_000) for _ in range(2)])
    q, scale, pct = quantize_rows_gptq_lite(w)
    assert pct == 0.999
    assert scale.tolist() == [0.5, 0.5]
    assert q[0, 5].item() == 31 and q[0, 0].item() == 31 and q[0, 1].item() == -31


def test_gptq_lite_keeps_the_max_when_it_is_exact() -> None:
    # |w| = 3 and one 31: the row max gives scale 1 and zero error, every clipped choice loses the outlier.
    w = torch.stack([_row_with_outlier(3.0, 31.0) for _ in range(4)])
    q, scale, pct = quantize_rows_gptq_lite(w)
    assert pct == 1.0 and scale.tolist() == [1.0] * 4
    torch.testing.assert_close(q.float() * scale.float()[:, None], w, rtol=0, atol=0)


def test_gptq_lite_choice_has_the_lowest_mse_and_a_symmetric_range() -> None:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(32, 2048, generator=g) * 5.0
    w[:, 0] = 60.0  # one heavy outlier per row
    q, scale, pct = quantize_rows_gptq_lite(w)
    assert pct in GPTQ_LITE_PERCENTILES and pct < 1.0
    assert q.min() >= -31 and q.max() <= 31
    mse = ((w - q.float() * scale.float()[:, None]) ** 2).mean()
    plain_q, plain_scale = quantize_rows_int6(w)
    plain_mse = ((w - plain_q.float() * plain_scale.float()[:, None]) ** 2).mean()
    assert mse < plain_mse


def test_gptq_lite_option_reaches_the_state_dict() -> None:
    w = torch.stack([_row_with_outlier(10.0, 20.0, n=512) for _ in range(200)])  # 102,400 elements
    details: dict = {}
    _, m = quantize_state_dict({"blocks.0.mlp.fc.weight": w}, cfg=QuantConfig(gptq_lite=True), details=details)
    assert m == {"blocks.0.mlp.fc.weight": {"type": "int6"}}
    assert details["blocks.0.mlp.fc.weight"]["clip_quantile"] < 1.0


# ------------------------------------------------------------------------------------ categories and formats


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("tok_emb.weight", "embed"),
        ("lm_head.weight", "embed"),
        ("blocks.3.mlp.proj.weight", "mlp"),
        ("blocks.3.attn.c_q.weight", "attn"),
        ("bigram.proj.weight", "attn"),  # ".proj." outside an MLP counts as attention
        ("bigram.embed.weight", "other"),
        ("skip_weights", "other"),
    ],
)
def test_classify_tensor(name: str, category: str) -> None:
    assert classify_tensor(name) == category


def test_quantize_tensor_formats() -> None:
    big = torch.randn(300, 256)  # 76,800 > 65,536
    assert quantize_tensor("blocks.1.attn.c_q.weight", torch.randn(256, 256))[1] == "passthrough"  # exactly 65,536
    entries, meta, _ = quantize_tensor("blocks.1.attn.c_q.weight", torch.randn(257, 256))
    assert meta == {"type": "int6"} and set(entries) == {"blocks.1.attn.c_q.weight.q", "blocks.1.attn.c_q.weight.scale"}
    assert quantize_tensor("blocks.1.mlp.fc.weight", big, int5_layers={1})[1] == {"type": "int5"}
    assert quantize_tensor("blocks.2.mlp.fc.weight", big, int5_layers={1})[1] == {"type": "int6"}
    assert quantize_tensor("tok_emb.weight", big)[1] == {"type": "int8"}
    entries, meta, _ = quantize_tensor("blocks.1.resid_mix", big)  # a large control tensor stays fp32
    assert meta == "passthrough_ctrl" and entries["blocks.1.resid_mix"].dtype == torch.float32
    entries, meta, _ = quantize_tensor("counts", torch.arange(100_000))
    assert meta == "passthrough" and entries["counts"].dtype == torch.int64


def _record_state_dict(device: str = "meta") -> dict[str, torch.Tensor]:
    with torch.device(device):
        return GPT(ModelConfig()).state_dict()


def test_record_tensor_formats_table() -> None:
    sd = _record_state_dict()
    assert sum(t.numel() for t in sd.values()) == 27_137_221
    int6 = {
        f"blocks.{i}.{s}.weight"
        for i in range(11)
        for s in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")
    }
    int8 = {"tok_emb.weight", "bigram.embed.weight"}
    formats = {name: tensor_format(name, t) for name, t in sd.items()}
    assert {n for n, f in formats.items() if f == "int6"} == int6
    assert {n for n, f in formats.items() if f == "int8"} == int8
    fp16 = set(sd) - int6 - int8
    assert all(formats[n] == "passthrough" and sd[n].is_floating_point() for n in fp16)
    # spot checks of the passthrough side, including the exact 65,536-element boundary
    assert {
        "bigram.proj.weight",
        "bigram.scale",
        "smear.gate",
        "skip_weights",
        "blocks.0.attn.attn_gate.weight",
        "blocks.10.attn.vr_lambda",
        "blocks.4.resid_mix",
    } <= fp16
    assert sd["bigram.proj.weight"].numel() == 65_536
    assert (len(int6), len(int8), len(fp16)) == (66, 2, len(sd) - 68)
    demoted = {name: tensor_format(name, t, int5_layers={5}) for name, t in sd.items()}
    assert {n for n, f in demoted.items() if f == "int5"} == {n for n in int6 if n.startswith("blocks.5.")}


def test_record_state_dict_quantizes_to_the_table() -> None:
    g = torch.Generator().manual_seed(0)
    sd = {name: torch.randn(t.shape, generator=g) * 0.02 for name, t in _record_state_dict().items()}  # real values
    w, m = quantize_state_dict(sd)
    assert list(m) == list(sd)
    for name, t in sd.items():
        fmt = tensor_format(name, t)
        if fmt == "passthrough":
            assert m[name] == "passthrough" and w[name].dtype == torch.float16
        else:
            assert m[name] == {"type": fmt}
            assert w[f"{name}.q"].dtype == torch.int8 and w[f"{name}.q"].shape == t.shape
            assert w[f"{name}.scale"].dtype == torch.float16 and w[f"{name}.scale"].shape == (t.shape[0],)


# -------------------------------------------------------------------------------------------- dequantization


def test_state_dict_roundtrip_restores_dtypes_and_stays_close() -> None:
    g = torch.Generator().manual_seed(4)
    sd = {
        "tok_emb.weight": torch.randn(600, 128, generator=g) * 0.05,
        "blocks.0.attn.c_q.weight": torch.randn(300, 256, generator=g) * 2.0,
        "blocks.0.attn_scale": torch.randn(64, generator=g),
        "blocks.0.mlp.fc.weight": (torch.randn(300, 256, generator=g) * 2.0).to(torch.bfloat16),
        "step": torch.tensor(7),
    }
    w, m = quantize_state_dict(sd)
    out = dequantize_state_dict(w, m, sd)
    assert list(out) == list(sd)
    for name, t in sd.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape
    assert torch.equal(out["step"], sd["step"])
    torch.testing.assert_close(out["blocks.0.attn_scale"], sd["blocks.0.attn_scale"].half().float())
    for name in ("blocks.0.attn.c_q.weight", "blocks.0.mlp.fc.weight"):
        step = w[f"{name}.scale"].float()[:, None]
        assert torch.all((sd[name].float() - out[name].float()).abs() <= step / 2 + 0.02 * sd[name].float().abs())
    # embedding rows have |w| < 1, so the int8 scale sits at its floor 1/127: a fixed step, error <= 1/254
    assert w["tok_emb.weight.scale"].tolist() == [FP16_1_OVER_127] * 600
    assert (out["tok_emb.weight"] - sd["tok_emb.weight"]).abs().max() <= 0.5 / 127 + 1e-4


def test_dequantize_skips_names_missing_from_meta() -> None:
    sd = {"a": torch.ones(3), "b": torch.ones(2)}
    w, m = quantize_state_dict(sd)
    del m["b"]
    assert list(dequantize_state_dict(w, m, sd)) == ["a"]


def test_tiny_model_roundtrip_keeps_logits_close() -> None:
    torch.manual_seed(0)
    model = GPT(tiny_config(model_dim=128, mlp_mult=5.0, num_heads=4, num_kv_heads=2))  # mlp.fc: 640x128 -> int6
    sd = model.state_dict()
    w, m = quantize_state_dict(sd)
    assert m["blocks.0.mlp.fc.weight"] == {"type": "int6"}
    fresh = GPT(tiny_config(model_dim=128, mlp_mult=5.0, num_heads=4, num_kv_heads=2))
    fresh.load_state_dict(dequantize_state_dict(w, m, fresh.state_dict()), strict=True)
    ids = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids), model(ids), atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda w, m: w.pop("x.weight.scale"), "'x.weight.scale' is missing"),
        (lambda w, m: w.pop("x.weight.q"), "'x.weight.q' is missing"),
        (lambda w, m: m.__setitem__("x.weight", {"type": "int4"}), "unknown format"),
        (lambda w, m: w.__setitem__("x.weight.q", torch.zeros(3, 3, dtype=torch.int8)), "does not match"),
        (lambda w, m: w.__setitem__("x.weight.scale", torch.ones(5).half()), "row scales"),
    ],
)
def test_dequantize_errors_name_the_tensor(mutate, message: str) -> None:
    sd = {"x.weight": torch.randn(400, 200)}
    w, m = quantize_state_dict(sd)
    mutate(w, m)
    with pytest.raises(QuantStateError, match=message) as err:
        dequantize_state_dict(w, m, sd)
    assert "'x.weight'" in str(err.value)


# --------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"zstd_levels": []}, "quant.zstd_levels"),
        ({"zstd_levels": [16, 23]}, "quant.zstd_levels"),
        ({"scale_floor_mult": 0.0}, "quant.scale_floor_mult"),
        ({"scale_floor_mult": float("nan")}, "quant.scale_floor_mult"),
        ({"code_bytes": -1}, "quant.code_bytes"),
        ({"code_bytes": ""}, "quant.code_bytes"),
        ({"artifact_limit_bytes": 0}, "quant.artifact_limit_bytes"),
    ],
)
def test_config_validation_names_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        QuantConfig(**kwargs)


def test_config_defaults_are_the_seed() -> None:
    cfg = QuantConfig()
    assert cfg.zstd_levels == [16, 1, 17, 2] and cfg.scale_floor_mult == 1.0
    assert cfg.int5_demotion and not cfg.gptq_lite and cfg.artifact_limit_bytes == 16_000_000

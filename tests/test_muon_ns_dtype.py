"""Muon's Newton-Schulz dtype option: bf16 stays the default everywhere; auto picks fp32 only on a bf16-less CPU."""

from __future__ import annotations

import math

import pytest
import torch

import golf_lit.optim.muon as muon_mod
from golf_lit.model.gpt import GPT
from golf_lit.optim.config import OptimConfig
from golf_lit.optim.muon import Muon, resolve_ns_dtype, zeropower_newton_schulz
from golf_lit.optim.param_groups import build_optimizers
from tests.conftest import tiny_config
from tests.test_muon import quintic_reference


@pytest.mark.parametrize("native", [True, False])
def test_auto_rule(monkeypatch, native):
    monkeypatch.setattr(muon_mod, "cpu_has_native_bf16", lambda: native)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert resolve_ns_dtype("bf16", cpu) is torch.bfloat16 and resolve_ns_dtype("bf16", cuda) is torch.bfloat16
    assert resolve_ns_dtype("fp32", cpu) is torch.float32 and resolve_ns_dtype("fp32", cuda) is torch.float32
    assert resolve_ns_dtype("auto", cuda) is torch.bfloat16  # GPU math never changes
    assert resolve_ns_dtype("auto", cpu) is (torch.bfloat16 if native else torch.float32)


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="ns_dtype"):
        resolve_ns_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="ns_dtype"):
        Muon([torch.nn.Parameter(torch.zeros(2, 2))], ns_dtype="half")
    with pytest.raises(ValueError, match="optim.muon_ns_dtype"):
        OptimConfig(muon_ns_dtype="half")


def test_fp32_iteration_is_the_quintic_to_fp32_accuracy():
    # Same fp64 SVD reference as tests/test_muon.py; fp32 rounding over 5 iterations of 24x24 Gram products is
    # ~1e-6 relative, against ~3.5e-2 for bf16.
    g, expected = quintic_reference()
    out = zeropower_newton_schulz(g, dtype=torch.float32)
    assert out.dtype == torch.float32
    assert ((out.double() - expected).norm() / expected.norm()).item() < 1e-5


def _steps(ns_dtype: str | None, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(24, 40, generator=gen))
    kw = {} if ns_dtype is None else {"ns_dtype": ns_dtype}
    opt = Muon([w], lr=0.02, momentum=0.95, weight_decay=0.04, **kw)
    out = []
    for _ in range(3):
        w.grad = torch.randn(24, 40, generator=gen)
        opt.step()
        out.append(w.detach().clone())
    return out


def test_bf16_setting_is_the_default_bit_for_bit():
    for a, b in zip(_steps(None), _steps("bf16")):
        assert torch.equal(a, b)


def test_fp32_step_follows_the_formula_with_fp32_newton_schulz():
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(24, 40, generator=gen)
    grads = [torch.randn(24, 40, generator=gen) for _ in range(3)]
    w, buf = w0.clone(), torch.zeros_like(w0)
    for g, got in zip(grads, _steps("fp32")):
        buf = 0.95 * buf + g
        x = zeropower_newton_schulz(g + 0.95 * buf, dtype=torch.float32) * math.sqrt(max(1, 24 / 40))
        w = w * (1 - 0.02 * 0.04) - 0.02 * x
        torch.testing.assert_close(got, w, rtol=0, atol=1e-6)  # |w| ~ 4, one fp32 ulp ~ 5e-7


def test_config_reaches_the_optimizer():
    model = GPT(tiny_config())
    muons = [o for o in build_optimizers(model, OptimConfig(muon_ns_dtype="auto")) if isinstance(o, Muon)]
    assert muons and all(o.ns_dtype == "auto" for o in muons)
    assert all(o.ns_dtype == "bf16" for o in build_optimizers(model, OptimConfig()) if isinstance(o, Muon))

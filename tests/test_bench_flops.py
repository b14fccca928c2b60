"""bench/train_step.py's FLOP convention and time-share buckets (nothing timed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

from golf_lit.model.gpt import GPT
from tests.conftest import tiny_config

_spec = importlib.util.spec_from_file_location(
    "train_step_compare", Path(__file__).resolve().parents[1] / "bench" / "train_step_compare.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_flops_per_token_by_hand():
    # tiny_config: V=64, d=32, 2 layers, 4 heads of 8, 2 KV heads, MLP 3x, BigramHash 32 x 16, tied head.
    per_layer = 32 * 32 + 16 * 32 + 16 * 32 + 32 * 32 + 4 * 32 + 96 * 32 + 32 * 96  # q k v proj gate fc proj
    n = 2 * per_layer + 32 * 16 + 64 * 32  # + bigram.proj + tied head (tok_emb as the output matrix)
    f = bench.flops_per_token(GPT(tiny_config()), seq_len=128)
    assert f["n_matmul"] == n == 21248
    assert f["attention"] == 6 * 2 * 128 * 32 and f["total"] == 6 * n + 6 * 2 * 128 * 32


def test_untied_head_is_counted_once():
    gpt = GPT(tiny_config(tie_embeddings=False))
    assert bench.matmul_params(gpt) == bench.matmul_params(GPT(tiny_config()))


def _evt(name, t, parent=None):
    return SimpleNamespace(name=name, self_cpu_time_total=t, cpu_parent=parent)


def test_time_share_buckets():
    opt = _evt("Optimizer.step#Muon.step", 0.0)
    events = [
        _evt("forward_backward", 100.0),  # a range, not an op: skipped
        _evt("aten::mm", 30.0),
        _evt("aten::_scaled_dot_product_flash_attention_for_cpu", 20.0),
        _evt("aten::_log_softmax", 10.0),  # the output head, not attention
        _evt("aten::mm", 25.0, parent=opt),  # Newton-Schulz matmuls belong to the optimizer
        _evt("nccl:all_reduce", 15.0),
    ]
    shares = bench.time_shares(SimpleNamespace(events=lambda: events), cuda=False)
    assert shares == {"matmul": 0.3, "optimizer": 0.25, "attention": 0.2, "communication": 0.15,
                      "elementwise / other": 0.1}

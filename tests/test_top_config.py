"""configs/top.yaml carries the logged values of docs/top-stack.md §8; configs/top-smoke.yaml trains end to end.

Both configs use the optimizer, warmdown, wall-clock and document-packing options of the training-stack issue
(branch h-train), so these tests pass once that work is merged.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_cli import print_config

ROOT = Path(__file__).resolve().parents[1]


def test_top_config_shows_the_logged_values(capsys):
    cfg = print_config(capsys, "--config", str(ROOT / "configs" / "top.yaml"))
    model, optim, data, trainer = cfg["model"], cfg["model"]["optim"], cfg["data"], cfg["trainer"]
    expected_model = dict(
        vocab_size=8192, num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=4.0,
        tie_embeddings=True, tied_embed_init_std=0.005, logit_softcap=30.0, rope_base=10000.0, rope_dims=16,
        rope_train_seq_len=2048, rope_yarn=False, qk_gain_init=5.0, ln_scale=True, xsa_last_n=11,
        value_residual=False, gated_attention=True, attn_gate_variant="sparse", gate_window=12,
        sparse_attn_gate_scale=0.5, leaky_relu=True, leaky_slope=0.5, smear_gate=True,
        smear_gate_variant="gated_bos", bigram_vocab_size=0, unet_skips=True, skip_gates_enabled=True,
        num_loops=2, loop_start=3, loop_end=5, enable_looping_at=0.35, parallel_start_layer=8,
        parallel_final_lane="mean", fused_ce_enabled=True, bos_id=1, compile=True, rope_positions="flat",
    )  # fmt: skip
    assert {k: model[k] for k in expected_model} == expected_model
    expected_optim = dict(
        matrix_lr=0.026, tied_embed_lr=0.03, scalar_lr=0.02, muon_momentum=0.97, muon_momentum_warmup_start=0.92,
        muon_momentum_warmup_steps=1500, muon_backend_steps=5, ns_coefficients="polar_express",
        muon_row_normalize=True, muon_wd=0.095, embed_wd=0.085, adam_wd=0.02, beta1=0.9, beta2=0.99,
        embed_beta2=None, scalar_beta2=None, adam_eps=1e-8, grad_clip_norm=0.3,
    )  # fmt: skip
    assert {k: optim[k] for k in expected_optim} == expected_optim
    expected_data = dict(
        train_batch_tokens=786432, train_seq_len=2048, val_batch_tokens=524288, document_packing=True,
        max_segment_len=2048,
    )  # fmt: skip
    assert {k: data[k] for k in expected_data} == expected_data
    assert "sp8192" in data["train_files"] and "8192" in data["tokenizer_path"]
    callbacks = {c["class_path"].split(".")[-1]: c.get("init_args", {}) for c in trainer["callbacks"]}
    assert callbacks["WallClockLimit"]["max_wallclock_seconds"] == 600
    assert callbacks["WallClockLimit"]["reserve_seconds"] == 8.0  # TOP's 0.5 overruns the budget (see the header)
    assert callbacks["Warmdown"]["warmdown_frac"] == 0.85 and callbacks["Warmdown"]["min_lr"] == 0.1
    assert callbacks["EMA"]["decay"] == 0.9965 and callbacks["CompilePriming"]["warmup_steps"] == 20
    names = list(callbacks)
    assert names.index("LoopingSwitch") < names.index("ArtifactExport")
    assert trainer["devices"] == 8 and trainer["precision"] == "bf16-mixed" and trainer["limit_val_batches"] == 0


def test_top_model_size():
    """The TOP shape has 35,945,671 parameters less the 48 unused parallel lambdas of blocks 0-7."""
    import yaml

    from golf_lit.model.config import ModelConfig
    from golf_lit.model.gpt import GPT

    fields = yaml.safe_load((ROOT / "configs" / "top.yaml").read_text())["model"]
    fields = {k: v for k, v in fields.items() if k not in ("optim", "compile")}
    assert GPT(ModelConfig(**fields)).num_parameters() == 35_945_671 - 8 * 6


@pytest.mark.slow
def test_top_smoke_config_trains_switches_looping_and_exports(tmp_path):
    cmd = [
        sys.executable, "-m", "golf_lit", "fit", "--config", str(ROOT / "configs" / "top-smoke.yaml"),
        "--trainer.max_steps", "20", "--data.val_max_tokens", "4096", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "layer_loop:enabled step:7 frac:0.350" in out.stdout  # 35 % of 20 steps, by steps (no clock cap)
    assert re.search(r"^step:20/20 train_loss:\d+\.\d{4}", out.stdout, re.M)
    report = json.loads((tmp_path / "runs" / "top-smoke" / "artifact" / "submission.json").read_text())
    assert report["fits"] and math.isfinite(report["val_bpb"]) and report["val_bpb"] < 5


def test_fit_help_documents_the_top_options(capsys):
    from golf_lit.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "-h"])
    out = " ".join(capsys.readouterr().out.split())
    for option, words in [
        ("num_loops", "Depth recurrence"),
        ("enable_looping_at", "golf_lit.callbacks.LoopingSwitch"),
        ("skip_gates_enabled", "Sigmoid skip gates"),
        ("parallel_start_layer", "Two-lane parallel residuals"),
        ("attn_gate_variant", "'sparse'"),
        ("smear_gate_variant", "'gated_bos'"),
        ("rope_yarn", "NTK base rescale"),
        ("fused_ce_enabled", "softcapped cross-entropy"),
    ]:
        assert f"--model.{option}" in out and words in out, option


def test_top_eval_config_has_the_logged_ttt_values():
    """configs/eval/top.yaml (phased TTT of docs/top-stack.md §8) parses as a `golf-lit eval` config."""
    from golf_lit.eval.cli import parse_config

    cfg = parse_config(["--config", str(ROOT / "configs" / "eval" / "top.yaml"), "--artifact", "final_model.int6.ptz"])
    t = cfg.phased_ttt
    assert cfg.strategies == ["phased_ttt"] and cfg.eval_budget_seconds == 600
    assert (t.prefix_docs, t.num_phases, t.lora_rank, t.lora_alpha, t.chunk_size, t.batch_size) == (
        2500, 3, 80, 144, 48, 64)
    assert (t.lora_lr, t.beta1, t.beta2, t.weight_decay, t.global_lr, t.global_chunk_tokens) == (
        1e-4, 0.0, 0.99, 0.5, 1e-3, 32768)

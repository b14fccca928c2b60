"""The Fabric Evaluator and ``golf-lit eval``: config resolution, report schema and log lines on the bundled sample,
record-format checkpoints, and equal results on 1 and 2 gloo ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES, resolve
from golf_lit.data.shards import load_validation_tokens
from golf_lit.data.tokenizer import build_byte_luts, load_tokenizer
from golf_lit.eval.cli import main, parse_config
from golf_lit.eval.config import EvalConfig
from golf_lit.eval.loading import find_model_config, load_model, provenance
from golf_lit.eval.strategies import EvalContext
from golf_lit.eval.strategies.roundtrip import Roundtrip
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT

ROOT = Path(__file__).resolve().parents[1]
MODEL = ModelConfig(num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4, xsa_last_n=2,
                    bigram_vocab_size=64, bigram_dim=16)
DATA = ["--val_files", SAMPLE_VAL_FILES, "--tokenizer", SAMPLE_TOKENIZER, "--accelerator", "cpu",
        "--num_threads", "1", "--progress", "false"]
SMALL = ["--max_tokens", "1200", "--sliding.seq_len", "128", "--sliding.stride", "32", "--ttt.chunk_tokens", "512",
         "--ngram_store.update_tokens", "256"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A quantized artifact of a small random GPT with export's config.json beside it."""
    from golf_lit.artifact import save_artifact as export_artifact

    out = tmp_path_factory.mktemp("art")
    torch.manual_seed(7)
    model = GPT(MODEL)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    export_artifact(model.state_dict(), out / "final_model.int6.ptz", code_bytes=0)
    (out / "config.json").write_text(json.dumps({"model": MODEL.to_dict(), "quant": {}}))
    return out / "final_model.int6.ptz"


def test_model_config_resolution(artifact, tmp_path):
    assert find_model_config(artifact) == MODEL  # export's config.json beside the artifact
    assert find_model_config(tmp_path / "x.ptz") == ModelConfig()  # nothing beside: defaults
    (tmp_path / "m.yaml").write_text("model:\n  init_args:\n    num_layers: 3\n    xsa_last_n: 3\n    compile: false\n")
    assert find_model_config(artifact, str(tmp_path / "m.yaml")) == ModelConfig(num_layers=3, xsa_last_n=3)
    with pytest.raises(FileNotFoundError, match="model_config"):
        find_model_config(artifact, str(tmp_path / "missing.json"))


def test_cli_precedence_flags_over_files(artifact, tmp_path):
    cfg = parse_config(["--artifact", str(artifact)])
    assert cfg.model == MODEL and cfg.strategies == ["roundtrip", "sliding"]
    cfg = parse_config(["--artifact", str(artifact), "--model.leaky_slope", "0.5", "--strategy", "sliding,ttt"])
    assert cfg.model.leaky_slope == 0.5 and cfg.model.model_dim == 32 and cfg.strategies == ["sliding", "ttt"]
    yaml = tmp_path / "eval.yaml"
    yaml.write_text(
        f"artifact: {artifact}\nngram: true\n"
        "mixers:\n  - {name: ent}\n  - {name: fix, alpha_mode: fixed, alpha: 0.2}\n"
        "ttt_sweep:\n  - {name: sgd}\n  - {name: adamw, optimizer: adamw, lr: 0.0001, freeze_blocks: 2}\n"
        "sliding: {stride: 128}\n"
    )
    cfg = parse_config(["--config", str(yaml), "--sliding.batch_seqs", "4"])
    assert [m.name for m in cfg.mixers] == ["ent", "fix"] and cfg.mixers[1].alpha == 0.2
    assert [t.name for t in cfg.ttt_runs] == ["sgd", "adamw"] and cfg.ttt_runs[1].freeze_blocks == 2
    assert (cfg.sliding.stride, cfg.sliding.batch_seqs) == (128, 4)
    with pytest.raises(ValueError, match="strategy"):
        EvalConfig(artifact="x", strategy="sliding,beam")
    with pytest.raises(ValueError, match="ttt_sweep"):
        parse_config(["--config", str(yaml), "--ttt_sweep", "[{name: a}, {name: a}]"])


def test_data_defaults_come_from_the_artifacts_config(artifact, tmp_path):
    import shutil

    shutil.copy(artifact, tmp_path / artifact.name)
    data = {"val_files": "sample:fineweb10B_sp1024/fineweb_val_*.bin", "tokenizer_path": "sample:tok.model",
            "train_seq_len": 128}
    marked = {"model": MODEL.to_dict(), "data": data, **provenance(tmp_path / artifact.name)}  # what export writes
    (tmp_path / "config.json").write_text(json.dumps(marked))
    cfg = parse_config(["--artifact", str(tmp_path / artifact.name)])
    assert (cfg.val_files, cfg.tokenizer, cfg.sliding.seq_len) == (data["val_files"], "sample:tok.model", 128)
    cfg = parse_config(["--artifact", str(tmp_path / artifact.name), "--sliding.seq_len", "64", "--tokenizer", "t"])
    assert (cfg.sliding.seq_len, cfg.tokenizer) == (64, "t")  # explicit flags win
    cfg = parse_config(["--artifact", str(artifact)])  # export's config.json without a data entry: challenge paths
    assert cfg.val_files.startswith("./data/") and cfg.sliding.seq_len == 2048


def test_eval_on_the_bundled_sample_writes_the_report_and_record_lines(artifact, tmp_path, capsys):
    report = tmp_path / "out" / "eval.json"
    argv = ["--artifact", str(artifact), *DATA, *SMALL, "--strategy", "roundtrip,sliding,ttt", "--ngram", "true",
            "--mixers", "[{name: ngram}, {name: fixed, alpha_mode: fixed, alpha: 0.3}]", "--report", str(report)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    data = json.loads(report.read_text())
    assert set(data) == {"artifact", "artifact_bytes", "model", "val_files", "tokenizer", "data", "num_targets",
                         "world_size", "device", "precision", "timings", "results"}
    assert data["num_targets"] == 1200 and data["world_size"] == 1 and data["model"] == MODEL.to_dict()
    assert data["artifact_bytes"] == artifact.stat().st_size
    names = [r["name"] for r in data["results"]]
    assert names == [
        "final_int6_roundtrip", "final_int6_sliding_window", "final_int6_sliding_window_ngram",
        "final_int6_sliding_window_fixed", "final_int6_ttt_sliding_window", "final_int6_ttt_sliding_window_ngram",
        "final_int6_ttt_sliding_window_fixed",
    ]
    for r in data["results"]:
        assert set(r) == {"name", "strategy", "variant", "val_loss", "val_bpb", "tokens", "bytes", "seconds",
                          "tokens_per_second", "settings"}
        assert r["tokens"] == (1152 if r["strategy"] == "roundtrip" else 1200) and r["bytes"] > r["tokens"]
        assert 0 < r["val_bpb"] < 20 and r["seconds"] > 0
        line = next(ln for ln in out.splitlines() if ln.startswith(r["name"] + " "))
        assert f"val_loss:{r['val_loss']:.8f} val_bpb:{r['val_bpb']:.8f}" in line and line.endswith("ms")
    assert "stride:32" in out and "chunk:512" in out
    by = {r["name"]: r for r in data["results"]}
    assert by["final_int6_sliding_window_fixed"]["settings"]["ngram"]["alpha"] == 0.3
    # The roundtrip number is the non-overlapping eval of the dequantized model.
    tokens = load_validation_tokens(resolve(SAMPLE_VAL_FILES), 128)[:1201]
    luts = build_byte_luts(load_tokenizer(resolve(SAMPLE_TOKENIZER)), 1024)
    ref = Roundtrip(128).score(EvalContext(load_model(artifact, MODEL), tokens, luts))["model"]
    assert by["final_int6_roundtrip"]["val_bpb"] == pytest.approx(ref.val_bpb, rel=1e-12)


def test_record_state_dict_checkpoint_and_bad_artifact(artifact, tmp_path, capsys):
    torch.manual_seed(8)
    sd = GPT(MODEL).state_dict()
    sd["blocks.0.attn.vr_lambda"] = torch.tensor([0.5, 0.5])  # the seed's unused layer-0 lambdas
    record = tmp_path / "final_model.pt"
    torch.save(sd, record)
    (tmp_path / "config.json").write_text(json.dumps({"model": MODEL.to_dict()}))
    assert main(["--artifact", str(record), *DATA, "--max_tokens", "300", "--sliding.seq_len", "64",
                 "--strategy", "sliding"]) == 0
    assert "final_int6_sliding_window val_loss:" in capsys.readouterr().out
    bad = tmp_path / "junk.ptz"
    bad.write_bytes(b"not an artifact")
    with pytest.raises(ValueError, match="junk.ptz"):
        main(["--artifact", str(bad), *DATA, "--strategy", "sliding"])


def test_two_gloo_ranks_match_one_rank(artifact, tmp_path):
    reports = {}
    for devices in (1, 2):
        reports[devices] = tmp_path / f"r{devices}.json"
        args = ["--artifact", str(artifact), *DATA, *SMALL, "--strategy", "sliding,ttt", "--ngram", "true",
                "--devices", str(devices), "--report", str(reports[devices])]
        if devices == 1:
            args += ["--sliding.batch_seqs", "1"]
        proc = subprocess.run([sys.executable, "-m", "golf_lit.eval.cli", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = (json.loads(reports[d].read_text()) for d in (1, 2))
    assert two["world_size"] == 2
    for a, b in zip(one["results"], two["results"]):
        assert a["name"] == b["name"] and a["tokens"] == b["tokens"] == 1200 and a["bytes"] == b["bytes"]
        tol = 1e-9 if a["strategy"] == "sliding" else 1e-6  # TTT sums gradients over ranks in another order
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=tol), a["name"]


def test_phased_ttt_strategy_through_the_evaluator_equals_the_module(artifact, tmp_path):
    """``--strategy phased_ttt`` scores every target once and reports what the strategy object computes."""
    from golf_lit.eval.strategies.phased_ttt import PhasedTTT, PhasedTTTConfig

    report = tmp_path / "eval.json"
    flags = ["--phased_ttt.prefix_docs", "2", "--phased_ttt.num_phases", "1", "--phased_ttt.lora_rank", "4",
             "--phased_ttt.chunk_size", "32", "--phased_ttt.eval_seq_len", "128", "--phased_ttt.batch_size", "2",
             "--phased_ttt.global_chunk_tokens", "256", "--phased_ttt.global_seq_len", "128"]
    argv = ["--artifact", str(artifact), *DATA, "--max_tokens", "1200", "--sliding.seq_len", "128",
            "--strategy", "phased_ttt", *flags, "--report", str(report)]
    assert main(argv) == 0
    (r,) = json.loads(report.read_text())["results"]
    assert r["name"] == "final_int6_phased_ttt" and r["tokens"] == 1200
    assert set(r["settings"]["phase_seconds"]) >= {"score_1"}
    tokens = load_validation_tokens(resolve(SAMPLE_VAL_FILES), 128)[:1201]
    luts = build_byte_luts(load_tokenizer(resolve(SAMPLE_TOKENIZER)), 1024)
    cfg = PhasedTTTConfig(prefix_docs=2, num_phases=1, lora_rank=4, chunk_size=32, eval_seq_len=128, batch_size=2,
                          global_chunk_tokens=256, global_seq_len=128)
    ref = PhasedTTT(cfg).score(EvalContext(load_model(artifact, MODEL), tokens, luts))["model"]
    assert r["val_bpb"] == pytest.approx(ref.val_bpb, rel=1e-9) and r["bytes"] == ref.byte_count

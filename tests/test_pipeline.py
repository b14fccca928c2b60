"""One pipeline (#24 items 3 and 5): train and score on one tokenizer, the top config's packing, a loud demotion."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from golf_lit.artifact import QuantConfig
from golf_lit.artifact.budget import build_artifact, int5_warning
from golf_lit.data.paths import resolve
from golf_lit.eval.loading import file_sha256, require_tokenizer_match
from golf_lit.model.gpt import GPT
from golf_lit.runs.export import ARTIFACT_NAME, export_model

from .conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
PLAIN_TOK = "sample:tokenizers/fineweb_1024_bpe.model"
CASEOPS_TOK = "sample:tokenizers/fineweb_1024_bpe_caseops.model"
CASEOPS_VAL = "sample:fineweb10B_sp1024_caseops/fineweb_val_*.bin"


def test_top_fit_and_eval_configs_name_the_same_caseops_data():
    fit = yaml.safe_load((ROOT / "configs" / "top.yaml").read_text())
    ev = yaml.safe_load((ROOT / "configs" / "eval" / "top.yaml").read_text())
    assert fit["data"]["val_files"] == ev["val_files"] and fit["data"]["tokenizer_path"] == ev["tokenizer"]
    assert "caseops" in ev["tokenizer"] and "_caseops/" in fit["data"]["train_files"]
    assert Path(fit["data"]["train_files"]).parent == Path(ev["val_files"]).parent
    quant = next(c["init_args"]["quant"] for c in fit["trainer"]["callbacks"]
                 if c["class_path"].endswith("ArtifactExport"))
    assert quant["compressor"] == "pergroup" and quant["pergroup_backend"] == "lrzip"  # TOP's packing (§5.7)
    tiny = yaml.safe_load((ROOT / "configs" / "top-tiny.yaml").read_text())
    tiny_ev = yaml.safe_load((ROOT / "configs" / "eval" / "top-tiny.yaml").read_text())
    assert tiny["data"]["val_files"] == tiny_ev["val_files"] and tiny["data"]["tokenizer_path"] == tiny_ev["tokenizer"]


def test_the_two_bundled_tokenizers_differ_but_have_one_size():
    """The trap of #24 item 3 in miniature: the vocabulary check cannot tell these two apart."""
    from golf_lit.data.caseops import is_caseops_tokenizer
    from golf_lit.data.tokenizer import load_tokenizer

    plain, caseops = load_tokenizer(resolve(PLAIN_TOK)), load_tokenizer(resolve(CASEOPS_TOK))
    assert plain.vocab_size() == caseops.vocab_size() == 1024
    assert is_caseops_tokenizer(caseops) and not is_caseops_tokenizer(plain)
    assert file_sha256(resolve(PLAIN_TOK)) != file_sha256(resolve(CASEOPS_TOK))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny model exported against the bundled CaseOps sample (sidecar bytes)."""
    out = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    export_model(GPT(tiny_config(vocab_size=1024, bigram_vocab_size=0)), out, val_files=CASEOPS_VAL,
                 tokenizer_path=CASEOPS_TOK, seq_len=64, val_max_tokens=2048, batch_seqs=8, log=lambda s: None,
                 quant=QuantConfig(code_bytes=0))  # fmt: skip
    return out


def test_export_records_the_tokenizer_sha256(exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["tokenizer"] == {"path": CASEOPS_TOK, "sha256": file_sha256(resolve(CASEOPS_TOK))}
    report = json.loads((exported / "submission.json").read_text())
    assert "warnings" not in report and report["int5_layers"] == []
    require_tokenizer_match(exported / ARTIFACT_NAME, CASEOPS_TOK)  # the same file passes


def test_eval_refuses_another_tokenizer_of_the_same_size_naming_both(exported):
    with pytest.raises(ValueError, match=r"tokenizer sample:tokenizers/fineweb_1024_bpe.model is not the one the "
                                         r"artifact was exported with: .*config.json records "
                                         r"sample:tokenizers/fineweb_1024_bpe_caseops.model"):
        require_tokenizer_match(exported / ARTIFACT_NAME, PLAIN_TOK)
    cmd = [sys.executable, "-m", "golf_lit", "eval", "--artifact", str(exported / ARTIFACT_NAME), "--strategy",
           "roundtrip", "--val_files", "sample:fineweb10B_sp1024/fineweb_val_*.bin", "--tokenizer", PLAIN_TOK,
           "--sliding.seq_len", "64", "--max_tokens", "1024", "--progress", "false"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr and "fineweb_1024_bpe_caseops.model" in lines[-1], out.stderr[-2000:]


def test_int5_demotion_is_a_loud_warning_in_log_and_report(tmp_path, caplog):
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=1024, bigram_vocab_size=0, model_dim=160, num_layers=3))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    probe = build_artifact(sd, QuantConfig(artifact_limit_bytes=1, code_bytes=0, zstd_levels=[3]))
    sizes = {tuple(s["int5_layers"]): s["bytes"] for s in probe.sizes_tried}
    assert sizes[(1,)] < sizes[()]  # demoting the middle block's MLP matrices to int5 saves bytes
    quant = QuantConfig(artifact_limit_bytes=sizes[(1,)], code_bytes=0, zstd_levels=[3])
    lines: list[str] = []
    with caplog.at_level(logging.WARNING, logger="golf_lit.artifact.budget"):
        report = export_model(model, tmp_path, val_files=CASEOPS_VAL, tokenizer_path=CASEOPS_TOK, seq_len=64,
                              val_max_tokens=1024, batch_seqs=8, log=lines.append, quant=quant)  # fmt: skip
    assert report["int5_layers"] == [1]
    warning = int5_warning([1], 6)
    assert warning.startswith("WARNING: INT5 DEMOTION") and "block(s) [1]" in warning
    assert "int5 instead of int6" in warning
    assert warning in lines and report["warnings"] == [warning]
    assert json.loads((tmp_path / "submission.json").read_text())["warnings"] == [warning]
    assert any("INT5 DEMOTION" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert int5_warning([], 6) is None


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("lrzip") is None, reason="lrzip binary not on PATH (.ci/run installs it)")
def test_top_tiny_trains_exports_and_scores_with_phased_ttt(tmp_path):
    """#24 "Done means": the top-shaped tiny config on the bundled CaseOps sample trains, exports with GPTQ +
    SDClip + LQER + pergroup/lrzip, and is scored with phased TTT through the eval config that belongs to it."""
    fit = [sys.executable, "-m", "golf_lit", "fit", "--config", str(ROOT / "configs" / "top-tiny.yaml"),
           "--trainer.max_steps", "6", "--data.val_max_tokens", "1024"]  # fmt: skip
    out = subprocess.run(fit, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "layer_loop:enabled step:3" in out.stdout and "gptq:calibrated" in out.stdout
    assert "INT5 DEMOTION" not in out.stdout
    art = tmp_path / "runs" / "top-tiny" / "artifact"
    report = json.loads((art / "submission.json").read_text())
    assert report["fits"] and report["compressor"] == "pergroup" and report["int5_layers"] == []
    formats = {r["name"]: r for r in report["per_tensor"]}
    assert formats["tok_emb.weight"]["format"] == "int7" and formats["blocks.0.mlp.fc.weight"]["format"] == "int6"
    assert formats["blocks.0.attn.attn_gate_w"]["format"] == "gate_int8"
    assert sum(1 for r in report["per_tensor"] if r.get("lqer_rank")) == 2  # lqer_top_k
    assert report["val_bytes"] > report["val_tokens"]  # sidecar bytes: original UTF-8, about 2 per CaseOps token
    config = json.loads((art / "config.json").read_text())
    assert config["tokenizer"]["path"] == CASEOPS_TOK and config["quant"]["pergroup_backend"] == "lrzip"
    ev = [sys.executable, "-m", "golf_lit", "eval", "--config", str(ROOT / "configs" / "eval" / "top-tiny.yaml"),
          "--artifact", str(art / ARTIFACT_NAME), "--max_tokens", "2048", "--progress", "false",
          "--report", str(tmp_path / "eval.json")]  # fmt: skip
    out = subprocess.run(ev, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    assert "byte sidecar" in result["data"]["byte_source"]
    [phased] = [r for r in result["results"] if r["strategy"] == "phased_ttt"]
    assert phased["tokens"] == result["num_targets"] and phased["bytes"] > phased["tokens"]
    assert 0 < phased["val_bpb"] < 2 * report["val_bpb"]  # the same model on more text: the same ballpark

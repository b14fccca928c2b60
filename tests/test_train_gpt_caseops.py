"""A CaseOps run scored with phased TTT: its shipped train_gpt.py, alone, reproduces the claimed score (byte
sidecar included) and the artifact bytes of golf-lit's own fit + eval."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from golf_lit.data.encode import tokenize_documents
from golf_lit.data.train_tokenizer import train_tokenizer
from golf_lit.runs.pack.build import REQUIREMENTS_NAME, SCRIPT_NAME
from golf_lit.runs.submit import build_submission

from .isolated import make_site, requirement_names, run_isolated

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
PHASED = ["--strategy", "phased_ttt", "--progress", "false", "--max_tokens", "1200",
          "--phased_ttt.prefix_docs", "2", "--phased_ttt.num_phases", "1", "--phased_ttt.lora_rank", "4",
          "--phased_ttt.chunk_size", "32", "--phased_ttt.eval_seq_len", "128", "--phased_ttt.batch_size", "2",
          "--phased_ttt.global_chunk_tokens", "256", "--phased_ttt.global_seq_len", "128"]


@pytest.fixture(scope="module")
def caseops_run(tmp_path_factory):
    """A CaseOps tokenizer and dataset made from tests/data, and one tiny seed trained and scored on it."""
    tmp = tmp_path_factory.mktemp("caseops")
    tok = train_tokenizer(DATA / "fineweb_train_docs.jsonl", 400, tmp / "tok", heldout_docs=20, num_threads=1,
                          caseops=True).model_path
    docs = tmp / "docs.jsonl"
    docs.write_text((DATA / "fineweb_val_docs.jsonl").read_text() + (DATA / "fineweb_train_docs.jsonl").read_text())
    data = tmp / "data"
    made = tokenize_documents(docs, tok, data, num_val_docs=200, workers=1, progress=False, caseops=True)
    assert made.val_byte_files  # the byte sidecar exists
    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    cfg["model"].update(vocab_size=400, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, xsa_last_n=1,
                        bigram_vocab_size=256, bigram_dim=32)  # no parallel residuals
    cfg["data"].update(train_files=str(data / "fineweb_train_*.bin"), val_files=str(data / "fineweb_val_*.bin"),
                       tokenizer_path=str(tok), train_batch_tokens=1024, train_seq_len=128, val_batch_tokens=2048,
                       val_max_tokens=1024)
    config = tmp / "caseops.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp / "seeds"
    # golf-lit eval takes data other than the bundled sample only from flags (docs/safety.md); train_gpt.py adds
    # its own (DATA_PATH, TOKENIZER_PATH) after the baked ones, and the last flag wins
    claimed = [*PHASED, "--val_files", str(data / "fineweb_val_*.bin"), "--tokenizer", str(tok)]
    cmd = [sys.executable, "-m", "golf_lit", "seeds", "--config", str(config), "--seeds", "5", "--out", str(out),
           "--fixed-steps", "2", "--eval-args", " ".join(claimed), "--trainer.val_check_interval", "2",
           "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as the isolated run below
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return tmp, out / "seed_5", data, tok


@pytest.mark.slow
def test_caseops_phased_ttt_claim_reproduced_by_the_shipped_file(caseops_run):
    tmp, run, data, tok = caseops_run
    folder = tmp / "records" / "caseops"
    sub = build_submission([run], folder)
    claimed = sub["per_seed"][0]
    assert claimed["result"] == "final_int6_phased_ttt"
    ours = json.loads((run / "eval.json").read_text())
    assert ours["data"]["byte_source"].startswith("byte sidecar")  # bytes come from the sidecar, not the LUTs
    rec = tmp / "rec"
    rec.mkdir()
    for name in (SCRIPT_NAME, REQUIREMENTS_NAME):
        shutil.copyfile(folder / name, rec / name)
    site = make_site(tmp / "site", requirement_names(rec / REQUIREMENTS_NAME))
    probe = run_isolated(site, ["-c", "import golf_lit"], cwd=rec)
    assert probe.returncode == 1 and "No module named 'golf_lit'" in probe.stderr
    env = {"SEED": "5", "RUN_ID": "c5", "DATA_PATH": str(data), "TOKENIZER_PATH": str(tok)}
    res = run_isolated(site, [SCRIPT_NAME], cwd=rec, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    theirs = json.loads((rec / "runs" / "c5" / "eval.json").read_text())
    assert theirs["data"]["byte_source"].startswith("byte sidecar")
    (r,) = theirs["results"]
    assert r["name"] == claimed["result"] and r["tokens"] == 1200
    # same code, same data, one thread each: the same float64 sums, so the same numbers bit for bit
    assert (r["val_bpb"], r["val_loss"], r["bytes"]) == (claimed["val_bpb"], claimed["val_loss"], claimed["bytes"])
    assert (rec / "runs" / "c5" / "artifact" / "final_model.int6.ptz").read_bytes() == \
        (folder / "final_model_seed5.int6.ptz").read_bytes()
    assert f"final_int6_phased_ttt val_loss:{r['val_loss']:.8f} val_bpb:{r['val_bpb']:.8f}" in \
        (rec / "logs" / "c5.txt").read_text()

"""Export with the leaderboard-top options: GPTQ calibration time is training time (docs/top-stack.md §5.1)."""

from __future__ import annotations

import json
import time

import pytest
import torch

import golf_lit.data.shards as shards
import golf_lit.runs.export
from golf_lit.artifact import QuantConfig, load_artifact_state_dict
from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_TRAIN_FILES, SAMPLE_VAL_FILES, resolve
from golf_lit.model.gpt import GPT
from golf_lit.runs.export import ARTIFACT_NAME, TrainingTime, export_model
from tests.conftest import tiny_config

QUANT = dict(gptq=True, sdclip=True, embed_bits=7, gptq_calibration_batches=2, gptq_calibration_tokens=256,
             code_bytes=0, lqer_rank=2, lqer_top_k=1, compressor="lzma")  # fmt: skip


def _export(tmp_path, monkeypatch, training_time: TrainingTime, delay: float):
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=1024, model_dim=128, bigram_vocab_size=0))
    val = {str(p) for p in shards.find_shards(resolve(SAMPLE_VAL_FILES))}
    state = {"calibrating": False, "files": []}
    real_load, real_calibrate = shards.load_shard, golf_lit.runs.export.calibrate

    def guarded_load(path):
        if state["calibrating"]:
            assert str(path) not in val, f"calibration read a validation shard: {path}"
        return real_load(path)

    def slow_calibrate(model, train_files, cfg, seq_len):
        state["calibrating"], state["files"] = True, [*state["files"], train_files]
        try:
            time.sleep(delay)  # a slow calibration, so training + calibration passes a tiny cap
            return real_calibrate(model, train_files, cfg, seq_len)
        finally:
            state["calibrating"] = False

    monkeypatch.setattr(shards, "load_shard", guarded_load)
    monkeypatch.setattr(golf_lit.runs.export, "calibrate", slow_calibrate)
    lines: list[str] = []
    report = export_model(
        model, tmp_path, quant=QuantConfig(**QUANT), val_files=SAMPLE_VAL_FILES, tokenizer_path=SAMPLE_TOKENIZER,
        seq_len=64, val_max_tokens=4096, eval_pre_quant=False, log=lines.append, train_files=SAMPLE_TRAIN_FILES,
        training_time=training_time,
    )  # fmt: skip
    assert state["files"] == [resolve(SAMPLE_TRAIN_FILES)]
    return model, report, lines


def test_calibration_past_the_cap_is_reported(tmp_path, monkeypatch) -> None:
    _, report, lines = _export(tmp_path, monkeypatch, TrainingTime(train_s=1.0, cap_s=1.2, reserve_s=0.1), 0.3)
    assert report["within_training_budget"] is False
    assert report["timings"]["calibration_s"] >= 0.3 and report["timings"]["train_s"] == 1.0
    for key in ("quantize_s", "serialize_s", "compress_s"):
        assert key in report["timings"]
    assert any("within_training_budget:False" in line for line in lines)
    assert any(line.startswith("WARNING: training + GPTQ calibration") for line in lines)
    on_disk = json.loads((tmp_path / "submission.json").read_text())
    assert on_disk["within_training_budget"] is False


def test_gptq_export_within_the_cap_roundtrips(tmp_path, monkeypatch) -> None:
    model, report, lines = _export(tmp_path, monkeypatch, TrainingTime(train_s=1.0, cap_s=600.0), 0.0)
    assert report["within_training_budget"] is True and not any("WARNING" in line for line in lines)
    assert report["compressor"] == "lzma"
    rows = {r["name"]: r for r in report["per_tensor"]}
    assert rows["tok_emb.weight"]["format"] == "int7" and rows["tok_emb.weight"]["method"] == "gptq+sdclip"
    assert sum("lqer_rank" in r for r in rows.values()) == 1
    sd = load_artifact_state_dict(tmp_path / ARTIFACT_NAME, model.state_dict())
    for name, t in model.state_dict().items():
        if t.is_floating_point():  # SDClip at k=14 clips nothing of a Gaussian-initialised row
            assert (sd[name].float() - t.float()).abs().max() < 0.1 * t.float().abs().max() + 1e-3, name


def test_gptq_without_training_files_is_an_error(tmp_path) -> None:
    model = GPT(tiny_config(vocab_size=1024, model_dim=128, bigram_vocab_size=0))
    with pytest.raises(ValueError, match="quant.gptq: calibration needs the training files"):
        export_model(model, tmp_path, quant=QuantConfig(**QUANT), val_files=SAMPLE_VAL_FILES,
                     tokenizer_path=SAMPLE_TOKENIZER, seq_len=64, val_max_tokens=2048, eval_pre_quant=False)  # fmt: skip  # noqa: E501

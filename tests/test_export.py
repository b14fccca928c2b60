"""Export after fit and from a checkpoint: artifact, report, roundtrip score, honest size accounting."""

from __future__ import annotations

import json

import lightning.pytorch as L
import pytest
import torch
from golf_lit.callbacks import EMA, ArtifactExport
from lightning.pytorch.callbacks import ModelCheckpoint

from golf_lit.artifact import QuantConfig, load_artifact_state_dict
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.optim.config import OptimConfig
from golf_lit.runs.export import ARTIFACT_NAME
from golf_lit.runs.export import main as export_main
from golf_lit.train.module import GolfLM

from .test_train import TINY_MODEL, make_trainer, tiny_data


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    L.seed_everything(0)
    module = GolfLM(optim=OptimConfig(muon_momentum_warmup_steps=4), **{**TINY_MODEL, "model_dim": 256})
    export = ArtifactExport(dirpath=str(tmp / "artifact"))
    ckpt = ModelCheckpoint(dirpath=tmp / "ckpt", save_last=True, save_top_k=0)
    trainer = make_trainer(tmp, [EMA(decay=0.8), export, ckpt], max_steps=60, val_check_interval=60)
    trainer.fit(module, tiny_data(train_batch_tokens=512))
    return tmp, module, export.report


def test_fit_ends_with_artifact_report_and_roundtrip(fitted):
    tmp, module, report = fitted
    art = tmp / "artifact"
    assert (art / ARTIFACT_NAME).is_file()
    on_disk = json.loads((art / "submission.json").read_text())
    assert on_disk["val_bpb"] == pytest.approx(report["val_bpb"])
    # size accounting adds up: the file's bytes + the counted code bytes
    assert on_disk["bytes_model"] == (art / ARTIFACT_NAME).stat().st_size
    assert on_disk["bytes_total"] == on_disk["bytes_model"] + on_disk["bytes_code"] <= 16_000_000
    assert on_disk["bytes_code"] == sum(f["bytes"] for f in on_disk["code_files"]) > 10_000
    # the quantized model scores within a small margin of the unquantized one
    assert abs(on_disk["val_bpb"] - on_disk["pre_quant_val_bpb"]) < 0.02
    assert on_disk["val_bpb"] < 3.7  # it learned something (uniform is ~4.2 bpb on this sample)
    formats = {row["name"]: row["format"] for row in on_disk["per_tensor"]}
    assert formats["blocks.0.mlp.fc.weight"] == "int6" and formats["tok_emb.weight"] == "int8"
    assert formats["blocks.0.attn.c_q.weight"] == "fp16"  # 256 x 256 = 65,536 elements: small enough to pass through
    cfg = json.loads((art / "config.json").read_text())
    assert cfg["model"]["num_layers"] == 2 and cfg["quant"]["zstd_levels"] == [16, 1, 17, 2]
    # the exported weights are the EMA weights, now in the module
    fresh = GPT(ModelConfig(**cfg["model"]))
    sd = load_artifact_state_dict(art / ARTIFACT_NAME, fresh.state_dict())
    w = module.gpt.state_dict()["blocks.0.mlp.fc.weight"]  # rows with max |w| < 1 use the floor step 1/31
    assert (sd["blocks.0.mlp.fc.weight"] - w).abs().max() <= 1 / 31 / 2 * 1.001


def test_export_command_reproduces_the_fit_artifact(fitted, tmp_path, capsys):
    tmp, _, report = fitted
    assert export_main(["--ckpt", str(tmp / "ckpt" / "last.ckpt"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / ARTIFACT_NAME).read_bytes() == (tmp / "artifact" / ARTIFACT_NAME).read_bytes()
    again = json.loads((tmp_path / "submission.json").read_text())
    assert again["val_bpb"] == pytest.approx(report["val_bpb"], rel=1e-12)
    out = capsys.readouterr().out
    assert "Serialized model int6+zstd: " in out and "final_int6_roundtrip val_loss:" in out


def test_export_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        export_main(["--ckpt", str(tmp_path / "missing.ckpt")])
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.ckpt"):
        export_main(["--ckpt", str(bad)])
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="not a golf-lit checkpoint"):
        export_main(["--ckpt", str(tmp_path / "foreign.ckpt")])


def test_over_budget_keeps_good_artifact(fitted, tmp_path):
    tmp, module, _ = fitted
    from golf_lit.artifact import ArtifactBudgetError
    from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES
    from golf_lit.runs.export import export_model

    good = export_model(
        module.gpt,
        tmp_path,
        val_files=SAMPLE_VAL_FILES,
        tokenizer_path=SAMPLE_TOKENIZER,
        seq_len=32,
        val_max_tokens=256,
        eval_pre_quant=False,
        log=lambda s: None,
    )
    before = (tmp_path / ARTIFACT_NAME).read_bytes()
    tight = QuantConfig(code_bytes=16_000_000 - 1000)
    with pytest.raises(ArtifactBudgetError, match="OVER_BUDGET"):
        export_model(
            module.gpt,
            tmp_path,
            quant=tight,
            val_files=SAMPLE_VAL_FILES,
            tokenizer_path=SAMPLE_TOKENIZER,
            seq_len=32,
            val_max_tokens=256,
            eval_pre_quant=False,
            log=lambda s: None,
        )
    assert (tmp_path / ARTIFACT_NAME).read_bytes() == before and good["fits"]
    assert (tmp_path / "final_model.int6.OVER_BUDGET.ptz").is_file()

"""``golf-lit eval`` on bad or unusual input: one vocabulary rule, output paths checked before work, data chosen
by flags or challenge defaults (an artifact's config.json only when golf-lit wrote it for that file), short
streams, messages that name the file/option, and one flag spelling for every command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from golf_lit.artifact import ArtifactError
from golf_lit.cli import main as golf_lit_main
from golf_lit.cli import normalize_options
from golf_lit.data.paths import DEFAULT_TOKENIZER, DEFAULT_VAL_FILES, SAMPLE_TOKENIZER, SAMPLE_VAL_FILES
from golf_lit.eval import evaluator as evaluator_module
from golf_lit.eval.cli import build_parser as eval_parser
from golf_lit.eval.cli import main, parse_config
from golf_lit.eval.loading import artifact_data_defaults
from golf_lit.eval.ngram import NgramStore
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.options import option_names
from golf_lit.runs.export import ARTIFACT_NAME, export_model
from golf_lit.runs.export import build_parser as export_parser
from tests.conftest import write_artifact as write_random_artifact

MODEL = ModelConfig(num_layers=1, model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4, xsa_last_n=1,
                    bigram_vocab_size=0)
DATA = ["--val_files", SAMPLE_VAL_FILES, "--tokenizer", SAMPLE_TOKENIZER, "--accelerator", "cpu",
        "--num_threads", "1", "--progress", "false"]


def write_artifact(folder: Path, cfg: ModelConfig = MODEL, seed: int = 0) -> Path:
    return write_random_artifact(folder, cfg, seed)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("rel"))


def fail_if_loaded(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the artifact was loaded before the error was found")

    monkeypatch.setattr(evaluator_module, "load_model", refuse)


# --- one vocabulary rule ------------------------------------------------------------------------------------


def test_tokenizer_smaller_than_the_model_vocabulary_is_refused(tmp_path, monkeypatch):
    big = write_artifact(tmp_path / "big", ModelConfig(**{**MODEL.to_dict(), "vocab_size": 2048}))
    fail_if_loaded(monkeypatch)
    with pytest.raises(ValueError, match=r"model.vocab_size=2048 but tokenizer .*fineweb_1024_bpe.model has 1024"):
        main(["--artifact", str(big), *DATA, "--max_tokens", "300", "--sliding.seq_len", "64"])


# --- output paths are checked before any work ---------------------------------------------------------------


def test_unwritable_report_path_fails_before_loading_anything(artifact, tmp_path, monkeypatch):
    fail_if_loaded(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    # val_files does not exist either: the report path must be the first thing checked
    argv = ["--artifact", str(artifact), *DATA, "--val_files", str(tmp_path / "none_*.bin")]
    with pytest.raises(ValueError, match=r"^report: cannot write '.*a_file/eval.json': '.*a_file' is a file, not a "
                                         r"directory$"):
        main([*argv, "--report", str(blocker / "eval.json")])
    with pytest.raises(ValueError, match=r"^report: .* is a directory"):
        main([*argv, "--report", str(tmp_path)])


# --- who chooses the validation data ------------------------------------------------------------------------


def test_foreign_config_json_does_not_choose_the_data(artifact, tmp_path, capsys):
    art = tmp_path / ARTIFACT_NAME
    shutil.copy(artifact, art)
    data = {"val_files": "elsewhere/val_*.bin", "tokenizer_path": "other.model", "train_seq_len": 128}
    (tmp_path / "config.json").write_text(json.dumps({"model": MODEL.to_dict(), "data": data}))
    cfg = parse_config(["--artifact", str(art)])
    assert (cfg.val_files, cfg.tokenizer, cfg.sliding.seq_len) == (DEFAULT_VAL_FILES, DEFAULT_TOKENIZER, 2048)
    assert DEFAULT_VAL_FILES == "./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin"  # relative to the cwd
    assert cfg.data_origin["val_files"] == "default" and "not written by golf-lit" in cfg.data_origin["note"]
    cfg = parse_config(["--artifact", str(art), "--data_from_artifact", "true"])  # explicit opt-in
    assert (cfg.val_files, cfg.tokenizer, cfg.sliding.seq_len) == ("elsewhere/val_*.bin", "other.model", 128)
    assert cfg.data_origin["tokenizer"] == "artifact"
    # golf-lit's mark with another file's sha256 (the artifact was replaced): ignored
    (tmp_path / "config.json").write_text(json.dumps(
        {"model": MODEL.to_dict(), "data": data, "written_by": "golf-lit", "artifact_sha256": "0" * 64}))
    found, why = artifact_data_defaults(art)
    assert found == {} and "artifact_sha256" in why


def test_export_marks_its_config_and_eval_reports_the_data_source(tmp_path, capsys):
    torch.manual_seed(3)
    data = {"val_files": SAMPLE_VAL_FILES, "tokenizer_path": SAMPLE_TOKENIZER, "train_seq_len": 64}
    export_model(GPT(MODEL), tmp_path, val_files=SAMPLE_VAL_FILES, tokenizer_path=SAMPLE_TOKENIZER, seq_len=64,
                 val_max_tokens=128, eval_pre_quant=False, extra_config={"data": data}, log=lambda s: None)
    art = tmp_path / ARTIFACT_NAME
    cfg = parse_config(["--artifact", str(art), "--max_tokens", "200"])
    assert (cfg.val_files, cfg.tokenizer, cfg.sliding.seq_len) == (SAMPLE_VAL_FILES, SAMPLE_TOKENIZER, 64)
    assert cfg.data_origin["val_files"] == "artifact" and "sha256 checked" in cfg.data_origin["note"]
    report = tmp_path / "eval.json"
    assert main(["--artifact", str(art), "--max_tokens", "200", "--strategy", "sliding", "--accelerator", "cpu",
                 "--progress", "false", "--tokenizer", SAMPLE_TOKENIZER, "--report", str(report)]) == 0
    got = json.loads(report.read_text())["data"]
    assert got["val_files"] == SAMPLE_VAL_FILES and got["seq_len"] == 64 and got["num_targets"] == 200
    assert got["origin"]["val_files"] == "artifact" and got["origin"]["tokenizer"] == "flag"
    assert got["byte_source"] == f"byte tables of tokenizer {SAMPLE_TOKENIZER}"
    out = capsys.readouterr().out
    assert f"eval_data val_files:{SAMPLE_VAL_FILES} (artifact) tokenizer:{SAMPLE_TOKENIZER} (flag)" in out
    art.write_bytes(art.read_bytes() + b"\0")  # any change to the artifact: its config no longer chooses the data
    assert parse_config(["--artifact", str(art)]).val_files == DEFAULT_VAL_FILES


# --- short streams --------------------------------------------------------------------------------------------


def test_ngram_on_a_stream_shorter_than_its_context(artifact, capsys):
    report = main(["--artifact", str(artifact), *DATA, "--max_tokens", "4", "--ngram", "true",
                   "--strategy", "sliding,ttt", "--sliding.seq_len", "64"])
    assert report == 0
    out = capsys.readouterr().out
    for name in ("final_int6_sliding_window", "final_int6_sliding_window_ngram", "final_int6_ttt_sliding_window_ngram"):
        assert f"{name} val_loss:" in out
    store = NgramStore(np.array([1, 2, 3, 4, 5]), 8, (2, 7))  # order 7 reads 6 tokens of context; 5 exist
    store.advance_to(4)
    keys, valid = store.context_keys(np.arange(4), 7)
    assert not valid.any() and store.lookup(np.arange(4), 7).totals.tolist() == [0, 0, 0, 0]


def test_roundtrip_shorter_than_one_sequence_is_refused_before_loading(artifact, monkeypatch):
    fail_if_loaded(monkeypatch)
    with pytest.raises(ValueError, match=r"max_tokens: roundtrip scores whole sequences of sliding.seq_len=64 .* "
                                         r"only 4 positions"):
        main(["--artifact", str(artifact), *DATA, "--max_tokens", "4", "--strategy", "sliding,roundtrip",
              "--sliding.seq_len", "64"])


# --- messages -------------------------------------------------------------------------------------------------


class Payload:
    """Not a tensor: torch's weights-only loader refuses it."""


def test_file_with_python_objects_gets_no_advice_to_unpickle_it(tmp_path):
    junk = tmp_path / "junk.pt"
    torch.save({"w": Payload()}, junk)
    with pytest.raises(ArtifactError) as info:
        main(["--artifact", str(junk), *DATA, "--max_tokens", "300", "--sliding.seq_len", "64",
              "--strategy", "sliding"])
    msg = str(info.value)
    assert "junk.pt" in msg and "refuses to unpickle" in msg
    assert "weights_only" not in msg and "can still be loaded" not in msg and "\n" not in msg


# --- one flag spelling ----------------------------------------------------------------------------------------


def test_underscore_and_hyphen_spellings_are_the_same_option(artifact, tmp_path, capsys):
    """The ``golf-lit`` dispatcher makes the two spellings equal (once, for every command) before a command parses."""
    a = parse_config(["--artifact", str(artifact), "--val_files", "v_*.bin", "--max_tokens", "7"])
    hyphens = ["--artifact", str(artifact), "--val-files", "v_*.bin", "--max-tokens=7"]
    b = parse_config(normalize_options(hyphens, option_names(eval_parser()))[0])
    assert (a.val_files, a.max_tokens) == (b.val_files, b.max_tokens) == ("v_*.bin", 7)
    assert "--val-files" not in option_names(export_parser())  # one declared spelling
    for flag in ("--val_files", "--val-files"):  # export parses either spelling (then fails on the missing ckpt)
        assert golf_lit_main(["export", "--ckpt", str(tmp_path / "missing.ckpt"), flag, "v_*.bin", "--no_ema"]) == 2
        assert "missing.ckpt" in capsys.readouterr().err

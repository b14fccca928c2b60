"""train_gpt.py: the traced module set, minification, the baked config, the environment variables, the
requirements, the counted size. The end-to-end runs of the file alone are in test_submit.py and
test_train_gpt_caseops.py."""

from __future__ import annotations

import ast
import base64
import json
import lzma
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from golf_lit.artifact import QuantConfig, count_code_bytes
from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.runs.export import ARTIFACT_NAME, export_model
from golf_lit.runs.pack.build import (
    REQUIREMENTS_NAME,
    SCRIPT_NAME,
    build_record_script,
    current_sources_digest,
    eval_strategies,
    minify,
    portable_fit_config,
    read_baked,
    trace_modules,
)
from golf_lit.runs.pack.record import apply_env

from .test_train import TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


def test_traced_modules_are_what_training_and_every_strategy_need():
    mods = trace_modules(["golf_lit.runs.pack.record", "golf_lit.callbacks"])
    for name in ("golf_lit", "golf_lit.runs.pack.record", "golf_lit.train.module", "golf_lit.train.cli",
                 "golf_lit.data.datamodule", "golf_lit.optim.muon", "golf_lit.model.gpt", "golf_lit.artifact.save",
                 "golf_lit.runs.export", "golf_lit.eval.evaluator", "golf_lit.eval.strategies.phased_ttt",
                 "golf_lit.data.byte_source", "golf_lit.data.manifest", "golf_lit.callbacks.ema",
                 "golf_lit.callbacks.artifact", "golf_lit.callbacks.wallclock"):
        assert name in mods, name
    # the dispatcher, the other commands and the generator itself are never run by train_gpt.py
    for name in ("golf_lit.cli", "golf_lit.runs.submit", "golf_lit.runs.seeds", "golf_lit.runs.ablate",
                 "golf_lit.data.cli", "golf_lit.data.download", "golf_lit.runs.pack.build"):
        assert name not in mods, name
    assert mods["golf_lit.callbacks"] == (ROOT / "callbacks" / "__init__.py", True)  # the checkout's folder


def test_tracer_follows_relative_lazy_and_submodule_imports(tmp_path):
    pkg = tmp_path / "golf_lit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import f\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from ..lazy import g\n    return g()\n")
    (pkg / "lazy.py").write_text("from golf_lit import leaf\nimport os\n")
    (pkg / "leaf.py").write_text("X = 1\n")
    (pkg / "unused.py").write_text("")
    (pkg / "main.py").write_text("from golf_lit.sub import f\n")
    mods = trace_modules("golf_lit.main", root=pkg)
    assert list(mods) == ["golf_lit", "golf_lit.lazy", "golf_lit.leaf", "golf_lit.main", "golf_lit.sub",
                          "golf_lit.sub.a"]


@pytest.mark.parametrize("minifier", ["python-minifier", "ast"])
def test_minify_drops_docstrings_and_keeps_behaviour(minifier):
    pytest.importorskip("python_minifier") if minifier == "python-minifier" else None
    src = '"""Module doc."""\nfrom dataclasses import dataclass\n\n\n@dataclass\nclass C:\n    """Doc."""\n\n' \
          '    x: int = 2  # comment\n    """Field doc."""\n\n    def f(self) -> int:\n        """Doc."""\n' \
          '        assert self.x > 0\n        return self.x * 3\n'
    out = minify(src, minifier)
    assert "doc" not in out.lower() and "comment" not in out and len(out) < 0.7 * len(src)
    ns: dict = {}
    exec(compile(out, "<m>", "exec"), ns)
    assert ns["C"]().f() == 6 and ns["C"](x=5).x == 5  # dataclass fields (annotations) survive
    with pytest.raises(AssertionError):
        ns["C"](x=-1).f()


def _seeded(cfg: dict, seed: int, root: str) -> dict:
    """``cfg`` as one seed's run gets it: its seed and output paths, a logger included (the shipped configs name
    none, so one is added: its save_dir is an output path too)."""
    out = json.loads(json.dumps(cfg))
    out["seed_everything"] = seed
    out["trainer"]["default_root_dir"] = root
    out["trainer"]["callbacks"][-2]["init_args"]["dirpath"] = f"{root}/checkpoints"
    out["trainer"]["logger"] = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": root}}]
    return out


def test_seeds_of_one_config_bake_one_file_and_the_config_is_readable():
    a = build_record_script(_seeded(SMOKE, 1, "runs/a"), ["--strategy", "roundtrip,sliding"])
    b = build_record_script(_seeded(SMOKE, 2, "elsewhere/b"), ["--strategy", "roundtrip,sliding"])
    assert a.script == b.script  # deterministic, and seed and output paths are not baked
    text = a.script.decode("ascii")
    assert text.count("\n") == 2 and text.startswith("import lzma,base64\nexec(")
    assert len(a.script) < a.minified_bytes < a.source_bytes
    baked = read_baked(a.script)
    assert baked == a.baked and baked["eval"] == ["--strategy", "roundtrip,sliding"]
    assert "seed_everything" not in baked["fit"] and "default_root_dir" not in baked["fit"]["trainer"]
    assert baked["fit"]["model"] == SMOKE["model"] and baked["fit"]["data"] == SMOKE["data"]
    # anything else the run trains with is baked: another model or another evaluation is another file
    other = json.loads(json.dumps(SMOKE))
    other["model"]["num_layers"] = 3
    assert build_record_script(other, ["--strategy", "roundtrip,sliding"]).script != a.script
    assert build_record_script(SMOKE, ["--strategy", "roundtrip"]).script != a.script
    with pytest.raises(ValueError, match="not a train_gpt.py written by golf-lit"):
        read_baked(b"print('hello')\n")


def test_portable_config_drops_seed_and_every_output_path():
    cfg = portable_fit_config(_seeded(SMOKE, 5, "runs/x"))
    cbs = {c["class_path"].rsplit(".", 1)[1]: c.get("init_args") for c in cfg["trainer"]["callbacks"]}
    assert cbs["ResumableCheckpoint"]["dirpath"] is None and cbs["ArtifactExport"]["dirpath"] is None
    assert cfg["trainer"]["logger"][0]["init_args"]["save_dir"] is None
    assert cbs["WallClockLimit"] == {"max_wallclock_seconds": 120}  # the rest is kept as it was


def test_payload_is_the_sources_and_a_literal_config():
    packed = build_record_script(SMOKE, [])
    blob = packed.script.split(b"b85decode(b'")[1].split(b"')")[0]
    tree = ast.parse(lzma.decompress(base64.b85decode(blob)).decode())
    sources = ast.literal_eval(tree.body[0].value)
    assert sorted(sources) == list(packed.modules)
    for name, (_, src) in sources.items():
        compile(src, name, "exec")
    assert ast.literal_eval(tree.body[1].value) == packed.baked


def test_requirements_are_what_the_traced_code_imports_pinned():
    reqs = build_record_script(SMOKE, []).requirements
    names = {r.split("==")[0].split("[")[0].lower() for r in reqs}
    assert {"torch", "lightning", "numpy", "sentencepiece", "zstandard", "jsonargparse"} <= names
    assert "golf-lit" not in names and "golf_lit" not in names and "python-minifier" not in names
    assert any(r.startswith("jsonargparse[signatures]==") for r in reqs)  # LightningCLI needs the extra
    import torch as t

    assert f"torch=={t.__version__}" in reqs


def test_sources_digest_changes_with_any_traced_source(tmp_path):
    tree = tmp_path / "checkout"
    shutil.copytree(ROOT / "golf_lit", tree / "golf_lit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "callbacks", tree / "callbacks", ignore=shutil.ignore_patterns("__pycache__"))
    packed = build_record_script(SMOKE, [], root=tree / "golf_lit")
    assert current_sources_digest(packed.baked["fit"], root=tree / "golf_lit") == packed.sources_sha256
    assert current_sources_digest(packed.baked["fit"]) == packed.sources_sha256  # same text as the checkout
    with open(tree / "callbacks" / "ema.py", "a") as f:
        f.write("# changed\n")
    assert current_sources_digest(packed.baked["fit"], root=tree / "golf_lit") != packed.sources_sha256


def test_eval_strategies_of_baked_options():
    assert eval_strategies(["--strategy", "roundtrip,phased_ttt", "--progress", "false"]) == ["roundtrip",
                                                                                             "phased_ttt"]
    assert eval_strategies(["--strategy=sliding"]) == ["sliding"]
    assert eval_strategies(["--max_tokens", "5"]) == ["roundtrip", "sliding"]  # EvalConfig's default chain


def test_environment_variables_map_onto_the_config(tmp_path):
    seeded = _seeded(SMOKE, 1, "runs/a")  # with a logger, whose save_dir follows RUN_ID too
    baked = portable_fit_config(seeded)
    env = {"DATA_PATH": "/d/sp8192", "TOKENIZER_PATH": "/t/x.model", "SEED": "42", "RUN_ID": "r7",
           "MAX_WALLCLOCK_SECONDS": "590", "ITERATIONS": "20000"}
    cfg, root = apply_env(baked, env, "/rec/train_gpt.py")
    assert root == Path("runs/r7") and cfg["trainer"]["default_root_dir"] == "runs/r7"
    assert cfg["seed_everything"] == 42 and cfg["trainer"]["max_steps"] == 20000
    assert cfg["data"]["train_files"] == "/d/sp8192/fineweb_train_*.bin"
    assert cfg["data"]["val_files"] == "/d/sp8192/fineweb_val_*.bin"
    assert cfg["data"]["tokenizer_path"] == "/t/x.model"
    cbs = {c["class_path"].rsplit(".", 1)[1]: c["init_args"] for c in cfg["trainer"]["callbacks"]}
    assert cbs["WallClockLimit"]["max_wallclock_seconds"] == 590.0
    assert cbs["ArtifactExport"]["quant"]["code_bytes"] == "/rec/train_gpt.py"  # the file counts itself
    assert cfg["trainer"]["logger"][0]["init_args"]["save_dir"] == "runs/r7"
    assert baked == portable_fit_config(seeded)  # not modified in place
    default, root = apply_env(baked, {}, "t.py")
    assert default["seed_everything"] == 1337 and root == Path("runs/train_gpt")
    assert default["data"] == SMOKE["data"] and default["trainer"]["max_steps"] == SMOKE["trainer"]["max_steps"]


def test_export_counts_the_written_train_gpt(tmp_path):
    torch.manual_seed(0)
    model = GPT(ModelConfig(**TINY_MODEL))
    report = export_model(model, tmp_path, quant=QuantConfig(zstd_levels=[1]), val_files=SAMPLE_VAL_FILES,
                          tokenizer_path=SAMPLE_TOKENIZER, seq_len=32, val_max_tokens=512, eval_pre_quant=False,
                          log=lambda s: None, eval_args=["--strategy", "roundtrip"])
    on_disk = json.loads((tmp_path / "submission.json").read_text())
    script = (tmp_path / SCRIPT_NAME).read_bytes()
    assert report["code_convention"] == on_disk["code_convention"] == "train_gpt"
    assert on_disk["bytes_code"] == len(script) and on_disk["code"]["bytes"] == len(script)
    assert on_disk["code_files"] == [{"path": SCRIPT_NAME, "bytes": len(script)}]
    assert on_disk["bytes_total"] == len(script) + (tmp_path / ARTIFACT_NAME).stat().st_size
    assert (tmp_path / REQUIREMENTS_NAME).read_text().splitlines() == on_disk["code"]["requirements"]
    baked = read_baked(script)
    assert baked["eval"] == ["--strategy", "roundtrip"]
    assert baked["fit"]["model"] == {**ModelConfig(**TINY_MODEL).to_dict()}  # no run config: the model's fields
    assert baked["fit"]["data"]["val_files"] == SAMPLE_VAL_FILES
    # artifact-level saving has no train_gpt.py to measure: 'auto' there is an error naming the option
    with pytest.raises(ValueError, match="quant.code_bytes"):
        count_code_bytes("auto")


def test_minimal_fit_config_without_the_run_config():
    from golf_lit.runs.export import build_parser, minimal_fit_config

    cfg = ModelConfig(**TINY_MODEL)
    got = minimal_fit_config(cfg, {"optim": {"matrix_lr": 0.02}, "data": {"val_files": "v", "train_seq_len": 32},
                                   "checkpoint": "x.ckpt"})
    assert got == {"model": {**cfg.to_dict(), "optim": {"matrix_lr": 0.02}},
                   "data": {"val_files": "v", "train_seq_len": 32}}
    assert minimal_fit_config(cfg) == {"model": cfg.to_dict(), "data": {}}
    flags = {a for action in build_parser()._actions for a in action.option_strings}
    assert {"--fit_config", "--eval_args", "--code_bytes"} <= flags and "--code" not in flags

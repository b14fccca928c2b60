"""Packed code: the traced module set, minification, and the one-file scorer reproducing golf-lit's score alone."""

from __future__ import annotations

import ast
import json
import re

import pytest
import torch

from golf_lit.artifact import QuantConfig
from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES, resolve
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.runs.export import ARTIFACT_NAME, export_model
from golf_lit.runs.pack.build import PACKED_NAME, build_packed, minify, scorer_modules

from .isolated import make_site, run_isolated
from .test_train import TINY_MODEL


def test_traced_modules_are_what_a_scorer_needs():
    mods = scorer_modules()
    for name in ("golf_lit", "golf_lit.runs.pack.entry", "golf_lit.model.gpt", "golf_lit.model.attention",
                 "golf_lit.artifact", "golf_lit.artifact.records", "golf_lit.artifact.quantize",
                 "golf_lit.eval.strategies.roundtrip", "golf_lit.eval.sums", "golf_lit.bpb", "golf_lit.data.shards",
                 "golf_lit.data.tokenizer"):
        assert name in mods, name
    # training code and modules that import lightning / torchmetrics are not reached
    for name in ("golf_lit.train.module", "golf_lit.train.metrics", "golf_lit.eval.evaluator", "golf_lit.runs.export",
                 "golf_lit.optim", "golf_lit.runs.pack.build"):
        assert name not in mods, name
    assert mods["golf_lit.artifact"][1] and not mods["golf_lit.artifact.records"][1]  # package flags


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
    mods = scorer_modules("golf_lit.main", root=pkg)
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


def test_packed_file_is_small_and_bakes_the_model_config():
    cfg = ModelConfig(**{**TINY_MODEL, "model_dim": 128})
    packed = build_packed(cfg, seq_len=64)
    text = packed.script.decode("ascii")
    assert text.count("\n") == 2 and text.startswith("import lzma,base64\nexec(")
    assert len(packed.script) < packed.minified_bytes < packed.source_bytes
    assert len(packed.script) < packed.source_bytes / 4  # minified + lzma: a fraction of the readable sources
    # the baked settings are inside the payload: another config gives another file
    assert build_packed(ModelConfig(**{**TINY_MODEL, "model_dim": 64}), seq_len=64).script != packed.script
    assert build_packed(cfg, seq_len=64).script == packed.script  # deterministic


@pytest.fixture(scope="module")
def packed_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("packed")
    torch.manual_seed(0)
    model = GPT(ModelConfig(**TINY_MODEL))
    report = export_model(model, out, quant=QuantConfig(code_bytes="packed"), val_files=SAMPLE_VAL_FILES,
                          tokenizer_path=SAMPLE_TOKENIZER, seq_len=32, val_max_tokens=2048, eval_pre_quant=False,
                          log=lambda s: None)
    site = make_site(tmp_path_factory.mktemp("site"))
    return out, report, site


def test_export_counts_the_packed_file(packed_export):
    out, report, _ = packed_export
    on_disk = json.loads((out / "submission.json").read_text())
    assert on_disk["code_convention"] == "packed"
    assert on_disk["bytes_code"] == (out / PACKED_NAME).stat().st_size
    assert on_disk["code_files"] == [{"path": PACKED_NAME, "bytes": on_disk["bytes_code"]}]
    assert on_disk["bytes_total"] == on_disk["bytes_code"] + (out / ARTIFACT_NAME).stat().st_size
    assert "golf_lit.model.gpt" in on_disk["packed"]["modules"]


def _score_alone(site, out, script):
    args = [str(script), "--artifact", str(out / ARTIFACT_NAME), "--val-files", resolve(SAMPLE_VAL_FILES),
            "--tokenizer", resolve(SAMPLE_TOKENIZER), "--val-max-tokens", "2048", "--device", "cpu"]
    return run_isolated(site, args, cwd=out)


@pytest.mark.slow
def test_packed_file_alone_reproduces_the_roundtrip_score(packed_export, tmp_path):
    out, report, site = packed_export
    # the clean interpreter really cannot see golf_lit or lightning
    probe = run_isolated(site, ["-c", "import torch, numpy, sentencepiece, zstandard\n"
                                      "for m in ('golf_lit', 'lightning', 'torchmetrics'):\n"
                                      "    try:\n        __import__(m); print('visible', m)\n"
                                      "    except ImportError:\n        pass\n"], cwd=tmp_path)
    assert probe.returncode == 0 and "visible" not in probe.stdout, probe.stderr[-2000:]
    script = tmp_path / PACKED_NAME
    script.write_bytes((out / PACKED_NAME).read_bytes())  # alone in a folder
    res = _score_alone(site, out, script)
    assert res.returncode == 0, res.stderr[-3000:]
    m = re.search(r"final_int6_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)", res.stdout)
    assert m, res.stdout
    # same code, same ops, same thread count: the same float64 sums
    assert float(m.group(2)) == pytest.approx(report["val_bpb"], rel=1e-12, abs=0)
    assert float(m.group(1)) == pytest.approx(report["val_loss"], rel=1e-12, abs=0)


@pytest.mark.slow
def test_packed_file_missing_a_traced_module_fails(packed_export, tmp_path, monkeypatch):
    """Broken variant: drop one traced module from the pack and the file no longer runs alone."""
    out, _, site = packed_export
    import golf_lit.runs.pack.build as build

    full = build.scorer_modules
    monkeypatch.setattr(build, "scorer_modules", lambda *a, **k: {
        k2: v for k2, v in full(*a, **k).items() if k2 != "golf_lit.bpb"})
    cfg = ModelConfig(**TINY_MODEL)
    script = tmp_path / PACKED_NAME
    script.write_bytes(build.build_packed(cfg, seq_len=32).script)
    res = _score_alone(site, out, script)
    assert res.returncode != 0 and "golf_lit.bpb" in res.stderr


def test_packed_payload_is_valid_python(packed_export):
    import base64
    import lzma

    out, _, _ = packed_export
    text = (out / PACKED_NAME).read_text()
    blob = re.search(r"b85decode\(b'([^']*)'\)", text).group(1)
    payload = lzma.decompress(base64.b85decode(blob)).decode()
    tree = ast.parse(payload)
    sources = ast.literal_eval(tree.body[0].value)
    for name, (_, src) in sources.items():
        compile(src, name, "exec")

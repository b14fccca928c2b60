"""The strategy interface: the registry drives the CLI, a strategy dropped in with one registry line runs through
the evaluator like the built-in ones (a strategy written from scratch in a file of its own, and subclasses of the
built-in ones), mixers reach only strategies that support them, and the evaluator stops a strategy that does not
score every position exactly once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES
from golf_lit.eval.cli import main, parse_config
from golf_lit.eval.config import EvalConfig
from golf_lit.eval.evaluator import Evaluator, build_strategies
from golf_lit.eval.invariants import InvariantError
from golf_lit.eval.scorer import MODEL
from golf_lit.eval.strategies import REGISTRY, EvalContext, Strategy
from golf_lit.eval.strategies.roundtrip import Roundtrip
from golf_lit.eval.strategies.sliding import Sliding, SlidingConfig
from golf_lit.eval.strategies.ttt import TTTConfig
from golf_lit.eval.sums import ScoreSums
from golf_lit.model.config import ModelConfig
from tests.conftest import write_artifact

MODEL_CFG = ModelConfig(num_layers=1, model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4, xsa_last_n=1,
                        bigram_vocab_size=0)
ARGS = ["--val_files", SAMPLE_VAL_FILES, "--tokenizer", SAMPLE_TOKENIZER, "--accelerator", "cpu", "--num_threads",
        "1", "--progress", "false", "--sliding.seq_len", "64", "--sliding.stride", "32", "--max_tokens", "300"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("strategies"), MODEL_CFG)


def test_registry_names_are_the_cli_strategies():
    assert list(REGISTRY) == ["roundtrip", "sliding", "ttt", "phased_ttt"]
    assert all(cls.name == name for name, cls in REGISTRY.items())
    runs = build_strategies(EvalConfig(artifact="a", strategy="roundtrip,ttt",
                                       ttt_sweep=[TTTConfig(name="t1"), TTTConfig(name="t2")]))
    assert [r.label for r in runs] == ["roundtrip", "t1_sliding_window", "t2_sliding_window"]
    with pytest.raises(ValueError, match="strategy: unknown strategy 'beam'; choose from roundtrip, sliding, ttt"):
        EvalConfig(artifact="a", strategy="beam")


class SlidingCopy(Sliding):
    """A new strategy dropped in: sliding scoring under another name; it records what the evaluator gave it."""

    name = "sliding_copy"
    label = "sliding_copy"
    seen_mixers: list = []

    def score(self, ctx: EvalContext) -> dict[str, ScoreSums]:
        type(self).seen_mixers.append(len(ctx.mixers))
        return super().score(ctx)


class NoMixers(Roundtrip):
    """A strategy without n-gram support must not receive mixers."""

    name = "roundtrip_copy"
    label = "roundtrip_copy"

    def score(self, ctx: EvalContext) -> dict[str, ScoreSums]:
        assert not ctx.mixers
        return super().score(ctx)


def test_a_new_strategy_is_one_registry_line(artifact, monkeypatch):
    monkeypatch.setitem(REGISTRY, SlidingCopy.name, SlidingCopy)
    monkeypatch.setitem(REGISTRY, NoMixers.name, NoMixers)
    cfg = parse_config(["--artifact", str(artifact), *ARGS, "--ngram", "true",
                        "--strategy", "sliding,sliding_copy,roundtrip,roundtrip_copy"])
    out = Evaluator(cfg).run()
    by = {r["name"]: r for r in out["results"]}
    assert SlidingCopy.seen_mixers == [1]
    assert by["final_int6_sliding_copy"]["val_bpb"] == by["final_int6_sliding_window"]["val_bpb"]
    assert by["final_int6_sliding_copy_ngram"]["val_bpb"] == by["final_int6_sliding_window_ngram"]["val_bpb"]
    assert by["final_int6_roundtrip_copy"]["val_bpb"] == by["final_int6_roundtrip"]["val_bpb"]
    assert by["final_int6_sliding_copy"]["strategy"] == "sliding_copy"


class DoubleCount(Strategy):
    """Broken: scores the stream twice (as the seed's tail windows re-score the end)."""

    name = "double"
    label = "double"

    def __init__(self, sliding: SlidingConfig) -> None:
        self.inner = Sliding(sliding)

    @classmethod
    def from_config(cls, cfg: EvalConfig) -> list[Strategy]:
        return [cls(cfg.sliding)]

    def score(self, ctx: EvalContext) -> dict[str, ScoreSums]:
        once = self.inner.score(ctx)[MODEL]
        return {MODEL: once + once}

    def settings(self) -> dict:
        return {}


def test_a_strategy_that_miscounts_is_stopped(artifact, monkeypatch):
    monkeypatch.setitem(REGISTRY, DoubleCount.name, DoubleCount)
    cfg = parse_config(["--artifact", str(artifact), *ARGS, "--strategy", "double"])
    with pytest.raises(RuntimeError, match="final_int6_double: scored 600 positions but the stream has 300"):
        Evaluator(cfg).run()


# A strategy written from scratch, in a file of its own, against the public interface only (base.py): the first
# half of the stream scored from its start, then the second half with the whole stream before it as context.
# Causal attention makes that the one-window sliding score of the stream. BROKEN re-scores the middle position.
NEW_STRATEGY_FILE = """
import torch

from golf_lit.eval.strategies.base import EvalContext, Strategy


class Halves(Strategy):
    name = "halves"
    label = "halves"
    overlap = 0

    def score(self, ctx: EvalContext):
        scorer = ctx.scorer()
        n, mid = ctx.num_targets, ctx.num_targets // 2
        if ctx.rank == 0:
            with torch.inference_mode():
                first = mid + self.overlap
                scorer.score(torch.arange(first), ctx.forward(scorer.tokens[None, :first])[0])
                scorer.score(torch.arange(mid, n), ctx.forward(scorer.tokens[None, :n])[0, mid:])
        return scorer.sums()

    def settings(self):
        return {"mid": "half"}


class Broken(Halves):
    name = "broken_halves"
    label = "broken_halves"
    overlap = 1
"""


def load_file_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_strategy_from_its_own_file_runs_with_one_registry_line(artifact, tmp_path, monkeypatch):
    path = tmp_path / "halves.py"
    path.write_text(NEW_STRATEGY_FILE)
    new = load_file_module(path)
    monkeypatch.setitem(REGISTRY, new.Halves.name, new.Halves)  # the one registry line
    report = tmp_path / "eval.json"
    argv = ["--artifact", str(artifact), *ARGS, "--sliding.seq_len", "300", "--sliding.stride", "300",
            "--strategy", "halves,sliding", "--report", str(report)]
    assert main(argv) == 0
    halves, one_window = json.loads(report.read_text())["results"]
    assert halves["name"] == "final_int6_halves" and halves["strategy"] == "halves"
    assert halves["settings"] == {"mid": "half"}
    assert halves["tokens"] == one_window["tokens"] == 300 and halves["bytes"] == one_window["bytes"]
    assert halves["val_bpb"] == pytest.approx(one_window["val_bpb"], rel=1e-5)  # fp32 forwards of other lengths

    monkeypatch.setitem(REGISTRY, new.Broken.name, new.Broken)
    with pytest.raises(InvariantError, match="invariant 4"):  # ctx.scorer() guards it: the middle is re-scored
        Evaluator(parse_config(["--artifact", str(artifact), *ARGS, "--strategy", "broken_halves"])).run()


def test_eval_package_has_one_definition_of_each_shared_name_and_no_own_collectives():
    """One PAD_ID and one IGNORE (strategies/base.py), one class per name across golf_lit/eval, and no strategy
    reaching torch.distributed: collectives come from the context."""
    import ast

    root = Path(__file__).parents[1] / "golf_lit" / "eval"
    constants: dict[str, list[str]] = {}
    classes: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root))
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id in ("PAD_ID", "IGNORE"):
                        constants.setdefault(t.id, []).append(rel)
            elif isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append(rel)
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("torch.distributed") for n in names), rel
    assert constants == {"PAD_ID": ["strategies/base.py"], "IGNORE": ["strategies/base.py"]}
    assert {name: where for name, where in classes.items() if len(where) > 1} == {}
    assert classes["PhasedTTT"] == ["strategies/phased_ttt.py"]

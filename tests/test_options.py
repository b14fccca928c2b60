"""One way to declare options (dataclasses through jsonargparse), hyphens normalized once in the dispatcher, every
QuantConfig field on `golf-lit export` with the checkpoint's own quant block as its default, one run-directory rule."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as L
import pytest
import yaml
from golf_lit.callbacks import ArtifactExport, ResumableCheckpoint

from golf_lit.artifact import QuantConfig
from golf_lit.cli import COMMANDS, as_typed, main, normalize_options
from golf_lit.options import UsageError, add_options, build, command_parser, option_names, parse, split_args
from golf_lit.runs.ablate import isolate_outputs
from golf_lit.runs.export import ARTIFACT_NAME, recorded_quant
from golf_lit.runs.export import build_parser as export_parser
from golf_lit.runs.rundir import relocate_outputs
from golf_lit.runs.seeds import seed_config
from golf_lit.runs.submit import portable_config
from golf_lit.train.checkpoint import SafeCheckpointIO

from .test_train import make_trainer, tiny_data, tiny_module

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "golf_lit"


@dataclass
class Toy:
    """Toy options."""

    name: str
    """The toy's name."""
    levels: list[int] = dataclasses.field(default_factory=lambda: [16, 1])
    """Levels, space-separated."""
    loud: bool = False
    """Say it loudly."""
    where: str | None = None
    """Where it goes."""


def toy_parser(positional: frozenset = frozenset()):
    parser = command_parser("toy")
    add_options(parser, Toy, positional=positional)
    return parser


def test_fields_become_options_with_types_defaults_and_argparse_habits():
    parser = toy_parser()
    toy = build(Toy, parse(parser, ["--name", "a"]))
    assert toy == Toy("a")  # defaults are the dataclass's, default_factory included
    assert build(Toy, parse(parser, ["--name", "a", "--loud", "--levels", "3", "4", "5"])) == Toy("a", [3, 4, 5], True)
    assert build(Toy, parse(parser, ["--name", "a", "--loud", "false"])).loud is False
    with pytest.raises(UsageError, match="levels") as info:
        parse(parser, ["--name", "a", "--levels", "high"])
    assert "\n" not in str(info.value)  # one line, for the one-line error the dispatcher prints
    with pytest.raises(UsageError, match="bogus"):
        parse(parser, ["--name", "a", "--bogus", "1"])
    with pytest.raises(UsageError, match="name"):
        parse(parser, [])  # a field without a default is required
    # a bare bool flag never takes the next argument as its value
    pos = toy_parser(frozenset({"name"}))
    assert build(Toy, parse(pos, ["--loud", "run_dir"])) == Toy("run_dir", loud=True)
    assert "Say it loudly." in pos.format_help() and "Levels, space-separated." in pos.format_help()


def test_hyphens_are_normalized_once_in_the_dispatcher():
    known = {"--val_files", "--no-progress", "--data.val_max_tokens"}
    argv = ["--val-files=x", "--no_progress", "--data.val-max-tokens", "7", "--eval-args", "--a-b c", "--",
            "--val-files"]
    out, renamed = normalize_options(argv, known)
    assert out == ["--val_files=x", "--no-progress", "--data.val_max_tokens", "7", "--eval-args", "--a-b c", "--",
                   "--val-files"]  # unknown names, values with spaces and everything after -- stay as typed
    assert renamed == {"--val_files": "--val-files", "--no-progress": "--no_progress",
                       "--data.val_max_tokens": "--data.val-max-tokens"}
    assert as_typed('Parser key "val_files": bad', renamed) == 'Parser key "val-files": bad'
    assert as_typed("--data.val_max_tokens: no /a/val_files/b", renamed) == "--data.val-max-tokens: no /a/val_files/b"
    # nothing below the dispatcher imports it (the upward imports export/eval had)
    pattern = re.compile(r"^\s*(from golf_lit\.cli import|import golf_lit\.cli\b|from golf_lit import cli\b)", re.M)
    top = {PACKAGE / "cli.py", PACKAGE / "__main__.py"}  # the dispatcher and `python -m golf_lit`
    users = [p for p in PACKAGE.rglob("*.py") if p not in top and pattern.search(p.read_text())]
    assert users == []
    assert "normalize_options" not in "".join(p.read_text() for p in PACKAGE.rglob("*.py") if p != PACKAGE / "cli.py")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_parser_is_built_from_dataclasses(command):
    """Every subcommand's parser is jsonargparse's, and every option has a help text (a field docstring)."""
    from importlib import import_module

    from jsonargparse import ArgumentParser

    parser = import_module(COMMANDS[command]).build_parser()
    assert isinstance(parser, ArgumentParser)
    names = option_names(parser) - {"-h", "--help", "--config", "--print_config"}
    assert names and all(n.startswith("--") for n in names)
    actions = {a for p in [parser] for a in p._option_string_actions.values()}
    assert all(a.help for a in actions if a.option_strings[0] in names)
    src = Path(import_module(COMMANDS[command]).__file__).read_text()
    assert "argparse" not in src.replace("jsonargparse", "")


def test_export_declares_every_quant_field_with_its_default():
    parser = export_parser()
    defaults = parser.get_defaults()
    for f in dataclasses.fields(QuantConfig):
        assert f"--{f.name}" in parser._option_string_actions, f.name
        assert defaults[f.name] == getattr(QuantConfig(), f.name), f.name


def test_split_args_keeps_own_options_and_passes_the_rest_on():
    parser = toy_parser()
    own, rest = split_args(parser, ["--name", "a", "--model.x", "1", "--levels", "1", "2", "--trainer.y", "-3"])
    assert own == ["--name", "a", "--levels", "1", "2"] and rest == ["--model.x", "1", "--trainer.y", "-3"]


def test_one_relocation_rule_for_seeds_ablate_and_submit(tmp_path):
    smoke = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    # the shipped configs name no logger (it follows default_root_dir); a config that names one gets it moved too
    smoke["trainer"]["logger"] = [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                   "init_args": {"save_dir": "runs/smoke"}}]
    for cb in smoke["trainer"]["callbacks"]:  # likewise a checkpoint directory named explicitly
        if cb["class_path"].endswith("ResumableCheckpoint"):
            cb["init_args"]["dirpath"] = "runs/smoke/checkpoints"
    cfg = relocate_outputs(smoke, tmp_path)
    trainer = cfg["trainer"]
    assert trainer["default_root_dir"] == str(tmp_path)
    assert [lg["init_args"]["save_dir"] for lg in trainer["logger"]] == [str(tmp_path)]
    dirs = {c["class_path"].split(".")[-1]: c["init_args"].get("dirpath") for c in trainer["callbacks"]
            if "dirpath" in (c.get("init_args") or {})}
    assert dirs == {"ArtifactExport": str(tmp_path / "artifact"), "ResumableCheckpoint": str(tmp_path / "checkpoints")}
    assert {k: v for k, v in cfg.items() if k != "trainer"} == {k: v for k, v in smoke.items() if k != "trainer"}
    assert smoke["trainer"]["default_root_dir"] == "runs/smoke"  # the input is not modified
    # the three commands apply this same rule
    assert isolate_outputs(smoke, tmp_path) == cfg
    assert seed_config(smoke, smoke["seed_everything"], tmp_path) == cfg
    assert portable_config(smoke) == relocate_outputs(smoke, "runs/submission")


NON_DEFAULT = QuantConfig(zstd_levels=[3], scale_floor_mult=2.0, gptq_lite=True, lqer_top_k=2)


@pytest.fixture(scope="module")
def quant_run(tmp_path_factory):
    """A 2-step tiny fit whose ArtifactExport uses a non-default quant block, with its last.ckpt."""
    tmp = tmp_path_factory.mktemp("quant_run")
    L.seed_everything(0)
    export = ArtifactExport(dirpath=str(tmp / "artifact"), quant=NON_DEFAULT, eval_pre_quant=False)
    ckpt = ResumableCheckpoint(dirpath=tmp / "ckpt", save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = make_trainer(tmp, [export, ckpt], max_steps=2, plugins=[SafeCheckpointIO()])
    trainer.fit(tiny_module(), tiny_data())
    return tmp


def test_export_uses_the_checkpoints_own_quant_block_and_flags_override_it(quant_run, tmp_path, capsys):
    from golf_lit.train.checkpoint import load_checkpoint

    ckpt = quant_run / "ckpt" / "last.ckpt"
    assert recorded_quant(load_checkpoint(ckpt)) == NON_DEFAULT.to_dict()
    assert recorded_quant({"callbacks": {}}) is None
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "a"), "--no_pre_quant_eval"]) == 0
    assert "quant: the checkpoint's ArtifactExport config" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "config.json").read_text())["quant"] == NON_DEFAULT.to_dict()
    # the same quantization as the run's own export, so the same bytes
    assert (tmp_path / "a" / ARTIFACT_NAME).read_bytes() == (quant_run / "artifact" / ARTIFACT_NAME).read_bytes()
    # a flag (spelled with hyphens: the dispatcher accepts both) overrides one field; the rest stay the run's
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "b"), "--no-pre-quant-eval",
                 "--zstd-levels", "16", "1", "17", "2", "--lqer_asym", "false"]) == 0
    quant = json.loads((tmp_path / "b" / "config.json").read_text())["quant"]
    assert quant == {**NON_DEFAULT.to_dict(), "zstd_levels": [16, 1, 17, 2], "lqer_asym": False}

"""golf-lit ablate: variant files, derived configs, the paired-delta statistics, and a real two-run ablation."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from golf_lit.cli import main
from golf_lit.runs.ablate import (
    DEFAULT_VARIANTS,
    derived_config,
    isolate_outputs,
    mean_se,
    parse_variants,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def test_variants_file_is_validated():
    raw = {"baseline": "b", "variants": [{"name": "a"}, {"name": "b", "args": "--x 1 --y 'a b'"}]}
    vs, base = parse_variants(raw, "f")
    assert base == "b" and vs[1].args == ["--x", "1", "--y", "a b"]
    for raw, msg in [
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "duplicate variant name"),
        ({"variants": [{"name": "a", "arg": "--x 1"}]}, r"unknown key\(s\) \['arg'\]"),
        ({"baseline": "z", "variants": [{"name": "a"}]}, "baseline 'z' is not one of"),
        ({"variants": []}, "non-empty list"),
        ({"variants": [{"name": "a/b"}]}, "may only hold"),
        ({"variants": [{"name": "a", "callbacks": {"EMA": 0.5}}]}, "callbacks"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_variants(raw, "file.yaml")


def test_derived_config_drops_or_changes_callbacks_by_class_name():
    base = yaml.safe_load(SMOKE.read_text())
    cfg = derived_config(base, {"EMA": None, "WallClockLimit": {"max_wallclock_seconds": None}}, "v")
    names = [c["class_path"].split(".")[-1] for c in cfg["trainer"]["callbacks"]]
    assert "EMA" not in names and "Warmdown" in names
    clock = next(c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("WallClockLimit"))
    assert clock["init_args"] == {"max_wallclock_seconds": None}
    assert any(c["class_path"].endswith("EMA") for c in base["trainer"]["callbacks"])  # the base is untouched
    with pytest.raises(ValueError, match="no such callback"):
        derived_config(base, {"NoSuchCallback": None}, "v")


def test_isolate_outputs_moves_only_output_folders(tmp_path):
    base = yaml.safe_load(SMOKE.read_text())
    ckpt = next(c for c in base["trainer"]["callbacks"] if c["class_path"].endswith("Checkpoint"))
    ckpt["init_args"]["dirpath"] = "runs/elsewhere/checkpoints"  # an explicit folder outside the run's root
    cfg = isolate_outputs(base, tmp_path)
    ckpt = next(c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("Checkpoint"))
    assert ckpt["init_args"]["dirpath"] == str(tmp_path / "checkpoints")
    for lg in cfg["trainer"].get("logger") or []:
        assert lg["init_args"]["save_dir"] == str(tmp_path)
    assert cfg["data"] == yaml.safe_load(SMOKE.read_text())["data"]


def test_paired_delta_and_standard_error_by_hand():
    vs, _ = parse_variants([{"name": "on"}, {"name": "off"}], "x")
    runs = {
        ("on", 1): {"returncode": 0, "val_bpb": 3.0, "seconds": 10, "bytes_total": 100},
        ("on", 2): {"returncode": 0, "val_bpb": 3.2, "seconds": 12, "bytes_total": 100},
        ("off", 1): {"returncode": 0, "val_bpb": 3.1, "seconds": 11, "bytes_total": 90},
        ("off", 2): {"returncode": 0, "val_bpb": 3.5, "seconds": 13, "bytes_total": 91},
    }
    on, off = summarize(vs, "on", [1, 2], runs)
    assert on["delta"] == 0 and on["delta_se"] == 0
    # deltas 0.1 and 0.3: mean 0.2, sample std 0.1*sqrt(2), se = std / sqrt(2) = 0.1
    assert math.isclose(off["delta"], 0.2, abs_tol=1e-12) and math.isclose(off["delta_se"], 0.1, abs_tol=1e-12)
    assert math.isclose(off["val_bpb"], 3.3) and off["bytes_total"] == 90 and off["seconds"] == 12
    assert mean_se([2.0]) == (2.0, None) and mean_se([]) == (None, None)


def _fit_args_parse(capsys, args: list[str]) -> dict:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(SMOKE), *args, "--print_config"])
    assert info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.slow
def test_bundled_variants_are_real_overrides(capsys):
    """Each built-in override parses as a `golf-lit fit` flag and changes the resolved model config."""
    file_vs, _ = parse_variants(yaml.safe_load((ROOT / "configs" / "ablate" / "record.yaml").read_text()), "record")
    builtin_vs, _ = parse_variants(DEFAULT_VARIANTS, "builtin")
    assert [(v.name, v.args, v.callbacks) for v in file_vs] == [(v.name, v.args, v.callbacks) for v in builtin_vs]
    base = _fit_args_parse(capsys, [])["model"]
    for v in builtin_vs:
        if v.args:
            model = _fit_args_parse(capsys, v.args)["model"]
            assert model != base, v.name
    top, _ = parse_variants(yaml.safe_load((ROOT / "configs" / "ablate" / "top.yaml").read_text()), "top")
    assert top[0].name == "all_on" and len(top) > 5


def test_dry_run_prints_the_user_commands(capsys, tmp_path):
    assert main(["ablate", "--config", str(SMOKE), "--only", "no_xsa", "--out", str(tmp_path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].endswith("--model.xsa_last_n 0")
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
    assert main(["ablate", "--config", str(SMOKE), "--only", "nope", "--dry-run"]) == 2
    assert "unknown variant(s) ['nope']" in capsys.readouterr().err


@pytest.mark.slow
def test_two_run_ablation_end_to_end(tmp_path):
    variants = tmp_path / "v.yaml"
    variants.write_text("variants:\n  - {name: all_on}\n  - {name: no_xsa, args: '--model.xsa_last_n 0'}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "golf_lit", "ablate", "--config", str(SMOKE), "--variants", str(variants),
           "--steps", "2", "--jobs", "2", "--out", str(out),
           "--", "--data.val_max_tokens", "1024", "--data.train_batch_tokens", "1024"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    report = json.loads((out / "ablation.json").read_text())
    on, off = report["rows"]
    assert (on["variant"], off["variant"]) == ("all_on", "no_xsa") and on["seeds"] == off["seeds"] == 1
    assert on["delta"] == 0.0 and off["delta"] == pytest.approx(off["val_bpb"] - on["val_bpb"], abs=1e-12)
    assert off["delta"] != 0.0  # XSA off changes the model
    assert on["bytes_total"] > 0 and 0 < on["val_bpb"] < 12
    command = shlex.split((out / "no_xsa" / "seed1337" / "command.txt").read_text())
    assert command[-2:] == ["--model.xsa_last_n", "0"] and "--trainer.max_steps" in command
    cfg = yaml.safe_load((out / "no_xsa" / "seed1337" / "fit_config.yaml").read_text())
    clock = next(c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("WallClockLimit"))
    assert clock["init_args"]["max_wallclock_seconds"] is None  # fixed steps, no time-dependent warmdown
    assert list((out / "no_xsa" / "seed1337").rglob("last.ckpt")) and not (tmp_path / "runs").exists()
    table = (out / "ablation.md").read_text()
    assert "| no_xsa | `--model.xsa_last_n 0` |" in table
    sep = cmd.index("--")  # ablate's own flags go before the fit arguments
    again = subprocess.run(
        [*cmd[:sep], "--resume", *cmd[sep:]], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert again.returncode == 0 and again.stdout.count("reused") == 2  # finished runs are not trained again
    assert json.loads((out / "ablation.json").read_text())["rows"] == report["rows"]

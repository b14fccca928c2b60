"""Bad inputs across ``golf-lit fit``, ``eval``, ``export`` and ``data``, one table row each.

Every row runs the real CLI entry (``golf_lit.cli.main``) in-process and checks: the documented nonzero exit code
(2 for bad input; argparse/jsonargparse usage errors exit 2 too), a one-line message naming the file or option,
no traceback, nothing created or modified under the test's directories (names, sizes, mtimes and hashes), and
that a hostile pickle ran nothing (its marker file does not exist).
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from golf_lit.callbacks import EMA, ResumableCheckpoint

from golf_lit.cli import main
from golf_lit.data.manifest import MANIFEST_NAME
from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES, resolve
from golf_lit.data.shards import HEADER_WORDS, SHARD_MAGIC, SHARD_VERSION
from golf_lit.model.config import ModelConfig
from golf_lit.train.checkpoint import SafeCheckpointIO

from .test_checkpoint import Marker
from .test_cli import ROOT
from .test_eval_reliability import write_artifact
from .test_train import make_trainer, tiny_data, tiny_module

SMOKE = str(ROOT / "configs" / "smoke.yaml")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
TOKENIZER = str(resolve(SAMPLE_TOKENIZER))  # `data` takes plain paths
EVAL_DATA = ["--tokenizer", SAMPLE_TOKENIZER, "--accelerator", "cpu", "--num_threads", "1", "--progress", "false",
             "--max_tokens", "300", "--sliding.seq_len", "64"]


def shard_bytes(magic: int = SHARD_MAGIC, version: int = SHARD_VERSION, count: int = 8, extra: int = 0) -> bytes:
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[:3] = (magic, version, count)
    return header.tobytes() + np.arange(count + extra, dtype="<u2").tobytes()


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """A last.ckpt from a 2-step tiny CPU fit (with EMA) and a tiny exported artifact (with its config.json)."""
    tmp = tmp_path_factory.mktemp("good")
    L.seed_everything(0)
    ckpt = ResumableCheckpoint(dirpath=tmp / "ckpt", save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = make_trainer(tmp, [EMA(decay=0.5), ckpt], max_steps=2, plugins=[SafeCheckpointIO()])
    trainer.fit(tiny_module(), tiny_data())
    return {"ckpt": tmp / "ckpt" / "last.ckpt", "artifact": write_artifact(tmp / "artifact"), "root": tmp}


def make_inputs(tmp: Path, good: dict[str, Path]) -> dict[str, Path]:
    """The bad files every row may point at (all under ``tmp``)."""
    f = {}

    def put(name: str, data: bytes) -> None:
        f[name] = tmp / name
        f[name].write_bytes(data)

    put("empty", b"")
    put("png", PNG)
    put("json", json.dumps({"model": {"num_layers": 2}}).encode())
    ckpt_bytes = good["ckpt"].read_bytes()
    put("cut.ckpt", ckpt_bytes[: len(ckpt_bytes) // 2])
    art_bytes = good["artifact"].read_bytes()
    put("cut.ptz", art_bytes[: len(art_bytes) // 2])
    corrupt = bytearray(art_bytes)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = bytes(64)
    put("corrupt.ptz", bytes(corrupt))
    f["marker"] = tmp / "pwned"
    evil = tmp / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "payload": Marker(f["marker"])}, evil)
    f["evil.ckpt"] = evil
    put("no_hparams.ckpt", b"")
    torch.save({"state_dict": {}}, f["no_hparams.ckpt"])
    put("magic.bin", shard_bytes(magic=12345))
    put("version.bin", shard_bytes(version=7))
    put("size.bin", shard_bytes(count=8, extra=3))
    put("short.bin", shard_bytes()[:100])
    put("unknown_key.yaml", b"model:\n  num_layers: 2\n  not_a_field: 3\n")
    put("wrong_type.yaml", b"model:\n  num_layers: two\n")
    put("combo.yaml", b"model:\n  num_heads: 3\n")
    put("docs.jsonl", b'{"txt": "no text key"}\n')
    put("regular_file", b"a file, not a directory")
    f["missing"] = tmp / "does_not_exist.bin"
    f["dir"] = tmp / "a_directory"
    f["dir"].mkdir()
    f["under_file"] = tmp / "regular_file" / "out"
    return f


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and directory under ``roots``: size, mtime and content hash of files; directories by presence.

    A directory's own mtime is left out: building an output aside in a temporary sibling folder and removing it
    on failure (``data tokenize``) touches the parent's mtime without creating or changing anything in it.
    """
    out = {}
    for root in roots:
        for p in [root, *root.rglob("*")]:
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            out[str(p)] = (st.st_size, st.st_mtime_ns, digest) if p.is_file() else (0, 0, digest)
    return out


def fit(*args: str) -> list[str]:
    return ["fit", "--config", SMOKE, *args]


def ev(artifact: str, *args: str) -> list[str]:
    return ["eval", "--artifact", artifact, "--val_files", SAMPLE_VAL_FILES, *EVAL_DATA, *args]


def ex(ckpt: str, *args: str) -> list[str]:
    return ["export", "--ckpt", ckpt, *args]


# (id, argv builder over the file map f (f["ckpt"]/f["artifact"] are the good ones), text the one-line message
#  must hold, exit status if not 2: `golf-lit data` exits 1 on a reported error, 2 on a usage error)
ROWS = [
    # ---- fit: checkpoints to resume from
    ("fit-hostile-ckpt", lambda f: fit("--ckpt_path", f["evil.ckpt"]), "evil.ckpt"),
    ("fit-truncated-ckpt", lambda f: fit("--ckpt_path", f["cut.ckpt"]), "cut.ckpt"),
    ("fit-empty-ckpt", lambda f: fit("--ckpt_path", f["empty"]), "empty"),
    ("fit-png-ckpt", lambda f: fit("--ckpt_path", f["png"]), "png"),
    ("fit-missing-ckpt", lambda f: fit("--ckpt_path", f["missing"]), "does_not_exist.bin"),
    ("fit-dir-ckpt", lambda f: fit("--ckpt_path", f["dir"]), "a_directory"),
    ("fit-last-without-ckpt", lambda f: fit("--ckpt_path", "last"), "no last.ckpt"),
    # ---- fit: configs
    ("fit-unknown-key", lambda f: fit("--model.xsa_lastn", "3"), "xsa_lastn"),
    ("fit-wrong-type", lambda f: fit("--model.num_layers", "two"), "num_layers"),
    ("fit-impossible-combo", lambda f: fit("--model.num_heads", "3"), "model.num_heads"),
    ("fit-yaml-unknown-key", lambda f: fit("--config", f["unknown_key.yaml"]), "not_a_field"),
    ("fit-yaml-wrong-type", lambda f: fit("--config", f["wrong_type.yaml"]), "num_layers"),
    ("fit-yaml-impossible-combo", lambda f: fit("--config", f["combo.yaml"]), "model.num_heads"),
    ("fit-missing-config", lambda f: ["fit", "--config", str(f["missing"])], "does_not_exist.bin"),
    ("fit-png-config", lambda f: ["fit", "--config", str(f["png"])], "png"),
    # ---- fit: shards and paths
    ("fit-shard-wrong-magic", lambda f: fit("--data.train_files", f["magic.bin"]), "magic.bin"),
    ("fit-shard-wrong-version", lambda f: fit("--data.train_files", f["version.bin"]), "version.bin"),
    ("fit-shard-size-mismatch", lambda f: fit("--data.val_files", f["size.bin"]), "size.bin"),
    ("fit-json-as-shard", lambda f: fit("--data.val_files", f["json"]), "json"),
    ("fit-root-under-file", lambda f: fit("--trainer.default_root_dir", f["under_file"]), "regular_file/out"),
    # ---- export
    ("export-hostile-ckpt", lambda f: ex(f["evil.ckpt"], "--out", f["tmp"] / "o"), "evil.ckpt"),
    ("export-truncated-ckpt", lambda f: ex(f["cut.ckpt"], "--out", f["tmp"] / "o"), "cut.ckpt"),
    ("export-empty-ckpt", lambda f: ex(f["empty"], "--out", f["tmp"] / "o"), "empty"),
    ("export-png-ckpt", lambda f: ex(f["png"], "--out", f["tmp"] / "o"), "png"),
    ("export-json-ckpt", lambda f: ex(f["json"], "--out", f["tmp"] / "o"), "json"),
    ("export-missing-ckpt", lambda f: ex(f["missing"], "--out", f["tmp"] / "o"), "does_not_exist.bin"),
    ("export-dir-ckpt", lambda f: ex(f["dir"], "--out", f["tmp"] / "o"), "a_directory"),
    ("export-ckpt-without-hparams", lambda f: ex(f["no_hparams.ckpt"], "--out", f["tmp"] / "o"), "no_hparams"),
    ("export-out-under-file", lambda f: ex(f["ckpt"], "--out", f["under_file"]), "regular_file/out"),
    ("export-bad-val-shard", lambda f: ex(f["ckpt"], "--out", f["tmp"] / "o", "--val_files", f["magic.bin"]),
     "magic.bin"),
    ("export-wrong-type", lambda f: ex(f["ckpt"], "--zstd_levels", "high"), "zstd_levels"),
    ("export-unknown-option", lambda f: ex(f["ckpt"], "--bogus_flag", "1"), "bogus_flag"),
    # ---- eval
    ("eval-hostile-artifact", lambda f: ev(f["evil.ckpt"]), "evil.ckpt"),
    ("eval-truncated-artifact", lambda f: ev(f["cut.ptz"]), "cut.ptz"),
    ("eval-corrupt-artifact", lambda f: ev(f["corrupt.ptz"]), "corrupt.ptz"),
    ("eval-empty-artifact", lambda f: ev(f["empty"]), "empty"),
    ("eval-png-artifact", lambda f: ev(f["png"]), "png"),
    ("eval-missing-artifact", lambda f: ev(f["missing"]), "does_not_exist.bin"),
    ("eval-dir-artifact", lambda f: ev(f["dir"]), "a_directory"),
    ("eval-shard-wrong-magic", lambda f: ev(f["artifact"], "--val_files", f["magic.bin"]), "magic.bin"),
    ("eval-shard-wrong-version", lambda f: ev(f["artifact"], "--val_files", f["version.bin"]), "version.bin"),
    ("eval-shard-size-mismatch", lambda f: ev(f["artifact"], "--val_files", f["size.bin"]), "size.bin"),
    ("eval-shard-shorter-than-header", lambda f: ev(f["artifact"], "--val_files", f["short.bin"]), "short.bin"),
    ("eval-png-as-shard", lambda f: ev(f["artifact"], "--val_files", f["png"]), "png"),
    ("eval-png-tokenizer", lambda f: ev(f["artifact"], "--tokenizer", f["png"]), "png"),
    ("eval-report-under-file", lambda f: ev(f["artifact"], "--report", f["under_file"] / "r.json"),
     "regular_file/out"),
    ("eval-wrong-type", lambda f: ev(f["artifact"], "--sliding.stride", "wide"), "stride"),
    ("eval-unknown-option", lambda f: ev(f["artifact"], "--bogus_flag", "1"), "bogus_flag"),
    ("eval-missing-config", lambda f: ["eval", "--config", str(f["missing"]), "--artifact", str(f["artifact"])],
     "does_not_exist.bin"),
    # ---- data
    ("data-missing-docs", lambda f: ["data", "tokenize", "--docs", str(f["missing"]), "--tokenizer",
                                     TOKENIZER, "--out", str(f["tmp"] / "o")], "does_not_exist.bin", 1),
    ("data-png-docs", lambda f: ["data", "tokenize", "--docs", str(f["png"]), "--tokenizer", TOKENIZER,
                                 "--out", str(f["tmp"] / "o"), "--workers", "1"], "png", 1),
    ("data-docs-without-text", lambda f: ["data", "tokenize", "--docs", str(f["docs.jsonl"]), "--tokenizer",
                                          TOKENIZER, "--out", str(f["tmp"] / "o"), "--workers", "1"],
     "docs.jsonl", 1),
    ("data-png-tokenizer", lambda f: ["data", "tokenize", "--docs", str(f["docs.jsonl"]), "--tokenizer",
                                      str(f["png"]), "--out", str(f["tmp"] / "o"), "--workers", "1"], "png", 1),
    ("data-out-under-file", lambda f: ["data", "tokenize", "--docs", str(f["docs.jsonl"]), "--tokenizer",
                                       TOKENIZER, "--out", str(f["under_file"]), "--workers", "1"],
     "regular_file/out", 1),
    ("data-wrong-type", lambda f: ["data", "tokenize", "--docs", str(f["docs.jsonl"]), "--tokenizer",
                                   TOKENIZER, "--shard-tokens", "many"], "shard-tokens"),
    ("data-train-tokenizer-missing-docs", lambda f: ["data", "train-tokenizer", "--docs", str(f["missing"]),
                                                     "--vocab-size", "256", "--out", str(f["tmp"] / "tok")],
     "does_not_exist.bin", 1),
]


def run_cli(argv: list) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:  # argparse/jsonargparse usage errors
        return exc.code if isinstance(exc.code, int) else 1


@pytest.mark.parametrize("argv, expect, status", [(*r[1:3], r[3] if len(r) > 3 else 2) for r in ROWS],
                         ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_names_it_and_touches_nothing(argv, expect, status, good, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    files = {**make_inputs(tmp_path, good), "ckpt": good["ckpt"], "artifact": good["artifact"], "tmp": tmp_path}
    monkeypatch.chdir(work)  # smoke.yaml writes runs/smoke relative to here: nothing may appear
    before = snapshot(tmp_path, good["root"])
    code = run_cli(argv(files))
    out, err = capsys.readouterr()
    assert code == status, (code, err[-3000:])
    assert "Traceback" not in out + err, err[-3000:]
    lines = [ln for ln in err.strip().splitlines() if "error" in ln.lower()]
    assert len(lines) == 1, err[-3000:]
    assert expect in lines[0], err[-3000:]
    assert not files["marker"].exists()
    assert snapshot(tmp_path, good["root"]) == before


# ---- issue #22 items 4, 5, 8, 9 (artifact and decoder side): hostile artifacts, configs and checkpoints ----------


def make_hostile(tmp: Path, good: dict[str, Path]) -> dict[str, Path]:
    """Hostile artifacts (each in its own folder with a config.json) and checkpoints, all under ``tmp``."""
    from golf_lit.artifact import packing

    from .test_artifact_hostile import LQER, MODEL_Q, XZ_1536_MIB_DICT, base_wm, pergroup_with_manifest, write_wm

    f: dict[str, Path] = {}

    def art(name: str, edit=None, kind: str = "zstd", cfg=MODEL_Q) -> None:
        w, m = base_wm()
        if edit is not None:
            edit(w, m)
        f[name] = write_wm(tmp / name, w, m, kind, cfg)

    def raw(name: str, blob: bytes) -> None:
        f[name] = write_wm(tmp / name, *base_wm())
        f[name].write_bytes(blob)

    def nan_scale(w, m):
        w["blocks.0.mlp.fc.weight.scale"][3] = float("nan")

    art("nan_scale", nan_scale)
    art("int64_codes", lambda w, m: w.update({"blocks.0.mlp.proj.weight.q": w["blocks.0.mlp.proj.weight.q"].long()}))
    art("lqer_bomb", lambda w, m: w.update({f"{LQER}.lqer_A": torch.zeros(65_536, 1, dtype=torch.int8),
                                             f"{LQER}.lqer_B": torch.zeros(1, 65_536, dtype=torch.int8)}))
    art("lqer_packing", lambda w, m: m[LQER].update(lqer=["asym"]))
    art("million_layers", cfg=ModelConfig(num_layers=1_000_000, xsa_last_n=0))
    w, m = base_wm()
    raw("manifest_bomb", pergroup_with_manifest(w, m, [["g", [["blocks.0.mlp.fc.weight.q", 100_000, 100_000, False]]]]))
    raw("manifest_malformed", pergroup_with_manifest(w, m, [["g", [["blocks.0.mlp.fc.weight.q", "640", 128, 0]]]]))
    flagged = bytearray(packing.pack(w, m, "pergroup", "zstd"))
    flagged[9] = 0x80  # stream 0's flags
    raw("unknown_flags", bytes(flagged))
    raw("lzma_dict_bomb", packing.write_container("lzma", [("lzma", 0, XZ_1536_MIB_DICT)]))
    # A forged config.json: golf-lit's mark, the artifact's real sha256, and data of the forger's choosing
    from golf_lit.eval.loading import provenance

    art("forged")
    evil = tmp / "forged" / "evil"
    evil.mkdir()
    (evil / "fineweb_val_000000.bin").write_bytes(shard_bytes())
    (tmp / "forged" / "config.json").write_text(json.dumps({
        **provenance(f["forged"]), "model": MODEL_Q.to_dict(),
        "data": {"val_files": str(evil / "fineweb_val_*.bin"), "tokenizer_path": TOKENIZER, "train_seq_len": 64}}))

    ckpt = torch.load(good["ckpt"], weights_only=True)

    def bad_ckpt(name: str, edit) -> None:
        c = copy.deepcopy(ckpt)
        edit(c)
        f[name] = tmp / name
        torch.save(c, f[name])

    def first_weight(c) -> str:
        return next(k for k in c["state_dict"] if k.startswith("gpt.blocks.0."))

    bad_ckpt("million_layers.ckpt", lambda c: c["hyper_parameters"].update(num_layers=1_000_000, xsa_last_n=0))
    bad_ckpt("two_layers.ckpt", lambda c: c["hyper_parameters"].update(num_layers="two"))
    bad_ckpt("nan_weight.ckpt", lambda c: c["state_dict"][first_weight(c)].view(-1).__setitem__(0, float("nan")))
    bad_ckpt("shape.ckpt", lambda c: c["state_dict"].update({first_weight(c): torch.zeros(3, 5)}))
    bad_ckpt("ema_shape.ckpt", lambda c: c["callbacks"]["EMA"]["shadow"].update(
        {next(iter(c["callbacks"]["EMA"]["shadow"])): torch.zeros(3, 5)}))
    return f


def ev_noval(artifact, *args) -> list[str]:
    """eval with the data flags of EVAL_DATA but no --val_files and no --tokenizer (the defaults decide)."""
    rest = [a for a in EVAL_DATA if a != SAMPLE_TOKENIZER and a != "--tokenizer"]
    return ["eval", "--artifact", str(artifact), *rest, *args]


HOSTILE_ROWS = [
    ("eval-nan-scale", lambda f: ev(f["nan_scale"]), "NaN or infinite"),
    ("eval-int64-codes", lambda f: ev(f["int64_codes"]), "is int64, expected int8"),
    ("eval-lqer-factor-bomb", lambda f: ev(f["lqer_bomb"]), "LQER factors of shapes (65536, 1) and (1, 65536)"),
    ("eval-lqer-malformed-packing", lambda f: ev(f["lqer_packing"]), "unknown LQER packing"),
    ("eval-config-million-layers", lambda f: ev(f["million_layers"]), "config.json: model.num_layers=1000000"),
    ("eval-pergroup-manifest-bomb", lambda f: ev(f["manifest_bomb"]), "is 100000x100000, the model's (640, 128)"),
    ("eval-pergroup-manifest-malformed", lambda f: ev(f["manifest_malformed"]), "manifest_malformed"),
    ("eval-container-unknown-flags", lambda f: ev(f["unknown_flags"]), "unknown flags 0x80"),
    ("eval-lzma-dictionary-bomb", lambda f: ev(f["lzma_dict_bomb"]), "Memory usage limit"),
    # the forged config.json's data is not used: the challenge default is looked for (absent here) instead
    ("eval-forged-config-json", lambda f: ev_noval(f["forged"], "--tokenizer", SAMPLE_TOKENIZER),
     "./data/datasets/fineweb10B_sp1024/fineweb_val_"),
    ("export-ckpt-million-layers", lambda f: ex(f["million_layers.ckpt"], "--out", f["tmp"] / "o"),
     "model.num_layers=1000000"),
    # fit reads the checkpoint's hyper_parameters into its config: bounded before anything is built
    ("fit-ckpt-million-layers",
     lambda f: fit("--ckpt_path", f["million_layers.ckpt"], "--trainer.default_root_dir", f["tmp"] / "r"),
     "model.num_layers=1000000"),
    ("export-ckpt-wrong-type", lambda f: ex(f["two_layers.ckpt"], "--out", f["tmp"] / "o"), "two_layers.ckpt"),
    ("export-ckpt-nan-weight", lambda f: ex(f["nan_weight.ckpt"], "--out", f["tmp"] / "o"), "NaN or infinite"),
    ("export-ckpt-wrong-shape", lambda f: ex(f["shape.ckpt"], "--out", f["tmp"] / "o"), "of shape (3, 5)"),
    ("export-ckpt-ema-wrong-shape", lambda f: ex(f["ema_shape.ckpt"], "--out", f["tmp"] / "o"), "EMA weight"),
]


@pytest.fixture(scope="module")
def hostile(good, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    return {**make_hostile(root, good), "root": root}


@pytest.mark.parametrize("argv, expect", [r[1:3] for r in HOSTILE_ROWS], ids=[r[0] for r in HOSTILE_ROWS])
def test_hostile_artifact_or_checkpoint_is_one_line_and_touches_nothing(argv, expect, good, hostile, tmp_path,
                                                                         monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    files = {**hostile, "tmp": tmp_path}
    monkeypatch.chdir(work)
    before = snapshot(tmp_path, good["root"], hostile["root"])
    code = run_cli(argv(files))
    out, err = capsys.readouterr()
    assert code == 2, (code, err[-3000:])
    assert "Traceback" not in out + err, err[-3000:]
    lines = [ln for ln in err.strip().splitlines() if "error" in ln.lower()]
    assert len(lines) == 1, err[-3000:]
    assert expect in lines[0], err[-3000:]
    assert snapshot(tmp_path, good["root"], hostile["root"]) == before


# ------------------------------------------------------------------------------------------------------------------
# Run folders, class paths, signals and refusals before work (issue #22 items 1, 6-9; the `rootdir` rows). Each row:
# (id, argv builder over the file map, text the one `golf-lit ...` line must hold, exit status, optional setup
# called with (monkeypatch, files) before the run). The security rows put a somemodule.py on sys.path whose import
# would create the marker file.

EVIL_MODULE = "from pathlib import Path\nPath({marker!r}).write_text('ran')\n\n\nclass X:\n    pass\n"


def deep_json(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def make_run_inputs(tmp: Path, work: Path, good: dict[str, Path]) -> dict[str, Path]:
    """The extra bad files of the rootdir rows (under ``tmp``), and somemodule.py in ``work``."""
    f = {"marker": tmp / "pwned"}
    (work / "somemodule.py").write_text(EVIL_MODULE.format(marker=str(f["marker"])))

    def put(name: str, data: bytes) -> None:
        f[name] = tmp / name
        f[name].write_bytes(data)

    torch.save({"state_dict": {}, "hyper_parameters": {"optim": {"class_path": "somemodule.X"}}}, tmp / "cp.ckpt")
    f["cp.ckpt"] = tmp / "cp.ckpt"
    put("cp.yaml", b"trainer:\n  callbacks:\n    - class_path: somemodule.X\n")
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, 600)
    put("big_ids.bin", header.tobytes() + np.full(600, 2000, dtype="<u2").tobytes())
    put("no_docs.jsonl", b"\n\n")
    put("surrogate.jsonl", b'{"text": "a\\ud800b"}\n')
    put("deep.jsonl", deep_json() + b"\n")
    deep_art = tmp / "deep_config"
    deep_art.mkdir()
    (deep_art / "final_model.int6.ptz").write_bytes(good["artifact"].read_bytes())
    (deep_art / "config.json").write_bytes(deep_json())
    f["deep_config"] = deep_art / "final_model.int6.ptz"
    deep_ds = tmp / "deep_manifest"
    deep_ds.mkdir()
    (deep_ds / MANIFEST_NAME).write_bytes(deep_json())
    f["deep_manifest"] = deep_ds
    for name, cell in (("plot_ok", "2.0"), ("plot_big", "9" * 200_000)):
        (tmp / name).mkdir()
        (tmp / name / "metrics.csv").write_text(f"step,train/loss\n1,{cell}\n")
        f[name] = tmp / name
    return f


def raise_keyboard_interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def tokenizer_manifest(tmp: Path) -> Path:
    """A tokenized sample whose manifest records another tokenizer's sha256 (as if encoded with another one)."""
    from golf_lit.data.encode import tokenize_documents

    out = tmp / "other_tok"
    docs = Path(__file__).parent / "data" / "fineweb_val_docs.jsonl"
    tokenize_documents(docs, TOKENIZER, out, num_val_docs=20, workers=1, progress=False)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["tokenizer"]["sha256"] = "0" * 64
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    return out


NO_CUDA = not torch.cuda.is_available()
ROOTDIR_ROWS = [
    # ---- security: class paths from a handed file import nothing
    ("fit-class-path-in-ckpt-hparams", lambda f: fit("--ckpt_path", f["cp.ckpt"]), "somemodule.X", 2, None),
    ("fit-class-path-in-config", lambda f: fit("--config", f["cp.yaml"]), "somemodule.X", 2, None),
    ("fit-class-path-on-command-line", lambda f: fit("--trainer.callbacks+=somemodule.X"), "somemodule.X", 2, None),
    # ---- wrong data, refused before work
    ("fit-ckpt-of-another-shape", lambda f: fit("--ckpt_path", f["ckpt"]), "model_dim=64", 2, None),
    ("fit-token-ids-above-vocab", lambda f: fit("--data.val_files", f["big_ids.bin"]), "token id 2000", 2, None),
    ("fit-val-max-tokens-0", lambda f: fit("--data.val_max_tokens", "0"), "data.val_max_tokens", 2, None),
    ("eval-tokenizer-not-the-manifests", lambda f: ev(f["artifact"], "--val_files",
                                                      str(f["other_tok"] / "fineweb_val_*.bin")),
     "sha256", 2, None),
    ("data-docs-without-documents", lambda f: ["data", "tokenize", "--docs", f["no_docs.jsonl"], "--tokenizer",
                                               TOKENIZER, "--out", f["tmp"] / "o", "--workers", "1"],
     "no_docs.jsonl: no documents", 1, None),
    # ---- one line instead of a traceback
    ("fit-max-steps-negative", lambda f: fit("--trainer.max_steps", "-5"), "max_steps", 2, None),
    ("fit-mlp-mult-tiny", lambda f: fit("--model.mlp_mult", "1e-9"), "model.mlp_mult", 2, None),
    ("fit-seed-malformed", lambda f: fit("--seed_everything", "abc"), "seed_everything", 2, None),
    ("fit-accelerator-tpu", lambda f: fit("--trainer.accelerator", "tpu"), "accelerator", 2, None),
    *([("fit-accelerator-cuda", lambda f: fit("--trainer.accelerator", "cuda"), "accelerator", 2, None),
       ("eval-accelerator-cuda", lambda f: ev(f["artifact"], "--accelerator", "cuda"), "accelerator", 2, None)]
      if NO_CUDA else []),
    ("eval-num-threads-negative", lambda f: ev(f["artifact"], "--num_threads", "-3"), "num_threads", 2, None),
    ("eval-lora-rank-huge", lambda f: ev(f["artifact"], "--strategy", "phased_ttt", "--phased_ttt.lora_rank",
                                         "100000"), "phased_ttt.lora_rank", 2, None),
    ("eval-deep-config-json", lambda f: ev(f["deep_config"]), "config.json", 2, None),
    ("data-verify-deep-manifest", lambda f: ["data", "verify", f["deep_manifest"]], MANIFEST_NAME, 1, None),
    ("data-docs-lone-surrogate", lambda f: ["data", "tokenize", "--docs", f["surrogate.jsonl"], "--tokenizer",
                                            TOKENIZER, "--out", f["tmp"] / "o", "--workers", "1"],
     "lone surrogate", 1, None),
    ("data-docs-deep-json", lambda f: ["data", "tokenize", "--docs", f["deep.jsonl"], "--tokenizer", TOKENIZER,
                                       "--out", f["tmp"] / "o", "--workers", "1"], "deep.jsonl line 1", 1, None),
    ("plot-oversized-csv-cell", lambda f: ["plot", f["plot_big"]], "metrics.csv: not a readable CSV near line 2", 2,
     None),
    ("plot-dpi-huge", lambda f: ["plot", f["plot_ok"], "--dpi", "10000"], "--dpi", 2, None),
    # ---- Ctrl-C: one line, status 130, nothing half-written
    ("export-keyboard-interrupt", lambda f: ex(f["ckpt"], "--out", f["tmp"] / "o"), "interrupted by SIGINT", 130,
     lambda mp, f: mp.setattr("golf_lit.runs.export.export_model", raise_keyboard_interrupt)),
    ("eval-keyboard-interrupt", lambda f: ev(f["artifact"]), "interrupted by SIGINT", 130,
     lambda mp, f: mp.setattr("golf_lit.eval.evaluator.Evaluator.run", raise_keyboard_interrupt)),
    ("data-tokenize-keyboard-interrupt", lambda f: ["data", "tokenize", "--docs", Path(__file__).parent / "data" /
                                                    "fineweb_val_docs.jsonl", "--tokenizer", TOKENIZER, "--out",
                                                    f["tmp"] / "o", "--workers", "1"], "interrupted by SIGINT", 130,
     lambda mp, f: mp.setattr("golf_lit.data.encode.write_manifest", raise_keyboard_interrupt)),
]


@pytest.fixture(scope="module")
def other_tok(tmp_path_factory) -> Path:
    return tokenizer_manifest(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("argv, expect, status, setup", [r[1:] for r in ROOTDIR_ROWS], ids=[r[0] for r in ROOTDIR_ROWS])
def test_run_folder_and_security_rows(argv, expect, status, setup, good, other_tok, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    files = {**make_inputs(tmp_path, good), **make_run_inputs(tmp_path, work, good), "ckpt": good["ckpt"],
             "artifact": good["artifact"], "tmp": tmp_path, "other_tok": other_tok}
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))  # somemodule would be importable: only the allow-list keeps it out
    if setup is not None:
        setup(monkeypatch, files)
    before = snapshot(tmp_path, good["root"], other_tok)
    code = run_cli(argv(files))
    out, err = capsys.readouterr()
    assert code == status, (code, err[-3000:])
    assert "Traceback" not in out + err, err[-3000:]
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("golf-lit") or "error" in ln.lower()]
    assert len(lines) == 1, err[-3000:]
    assert expect in lines[0], err[-3000:]
    assert not files["marker"].exists() and "somemodule" not in sys.modules
    assert snapshot(tmp_path, good["root"], other_tok) == before

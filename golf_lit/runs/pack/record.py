"""What ``train_gpt.py`` runs: ``golf-lit fit`` with the baked config, then ``golf-lit eval`` with the baked options.

:mod:`golf_lit.runs.pack.build` traces this module's imports (and the callbacks the config names) to find the code
a run trains and scores with, and packs it with the config into one file. Run in the records folder as the
records are (``torchrun --standalone --nproc_per_node=8 train_gpt.py``; ``python train_gpt.py``), it trains under
the cap, writes the artifact (counting its own size as the code bytes), scores it with exactly the baked
strategy chain and writes its log. The records' environment variables map onto the config (docs/runs.md):

- ``DATA_PATH``: folder of the shards; ``data.train_files`` / ``data.val_files`` keep their file patterns;
- ``TOKENIZER_PATH``: ``data.tokenizer_path``;
- ``SEED``: ``seed_everything`` (default 1337);
- ``RUN_ID``: outputs go to ``runs/<RUN_ID>/`` and the log to ``logs/<RUN_ID>.txt`` (default ``train_gpt``);
- ``MAX_WALLCLOCK_SECONDS``: ``WallClockLimit.max_wallclock_seconds`` (0 = no cap);
- ``ITERATIONS``: ``trainer.max_steps``.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path, PurePosixPath
from typing import Any

ENV_KEYS = ("DATA_PATH", "TOKENIZER_PATH", "SEED", "RUN_ID", "MAX_WALLCLOCK_SECONDS", "ITERATIONS")
DEFAULT_RUN_ID = "train_gpt"
DEFAULT_SEED = 1337


def _callbacks(cfg: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The ``init_args`` of every callback of class ``name`` in the config (created empty where missing)."""
    found = []
    for cb in cfg.get("trainer", {}).get("callbacks") or []:
        if isinstance(cb, dict) and str(cb.get("class_path", "")).rsplit(".", 1)[-1] == name:
            if not isinstance(cb.get("init_args"), dict):
                cb["init_args"] = {}
            found.append(cb["init_args"])
    return found


def apply_env(baked_fit: dict[str, Any], env: dict[str, str], script: str) -> tuple[dict[str, Any], Path]:
    """The fit config to run: the baked one with the environment variables above and this run's folder.

    Args:
        baked_fit: The portable config baked into the file.
        env: The environment.
        script: Path of the running ``train_gpt.py`` (its size is the counted code).

    Returns:
        ``(config, run folder)``.
    """
    cfg = copy.deepcopy(baked_fit)
    root = Path("runs") / env.get("RUN_ID", DEFAULT_RUN_ID)
    cfg["seed_everything"] = int(env.get("SEED", DEFAULT_SEED))
    trainer = cfg.setdefault("trainer", {})
    trainer["default_root_dir"] = str(root)
    data = cfg.setdefault("data", {})
    if "DATA_PATH" in env:
        for key, default in (("train_files", "fineweb_train_*.bin"), ("val_files", "fineweb_val_*.bin")):
            pattern = PurePosixPath(str(data.get(key) or default)).name
            data[key] = str(Path(env["DATA_PATH"]) / pattern)
    if "TOKENIZER_PATH" in env:
        data["tokenizer_path"] = env["TOKENIZER_PATH"]
    if "ITERATIONS" in env:
        trainer["max_steps"] = int(env["ITERATIONS"])
    if "MAX_WALLCLOCK_SECONDS" in env:
        for args in _callbacks(cfg, "WallClockLimit"):
            args["max_wallclock_seconds"] = float(env["MAX_WALLCLOCK_SECONDS"])
    loggers = trainer.get("logger")
    for lg in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(lg, dict) and isinstance(lg.get("init_args"), dict) and "save_dir" in lg["init_args"]:
            lg["init_args"]["save_dir"] = str(root)
    exports = _callbacks(cfg, "ArtifactExport")
    if not exports:
        trainer.setdefault("callbacks", []).append({"class_path": "golf_lit.callbacks.ArtifactExport",
                                                    "init_args": {}})
        exports = _callbacks(cfg, "ArtifactExport")
    for args in exports:
        if not isinstance(args.get("quant"), dict):
            args["quant"] = {}
        args["quant"]["code_bytes"] = str(script)  # this file is the counted code
        args["eval_args"] = None  # scored below
    return cfg, root


class _Tee:
    """Write to a stream and a log file."""

    def __init__(self, stream, log) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def main(baked: dict[str, Any], script: str) -> int:
    """Train, export and score as the baked config and eval options say; returns the exit status."""
    env = dict(os.environ)
    cfg, root = apply_env(baked["fit"], env, os.path.abspath(script))
    rank = int(env.get("RANK", "0"))
    log = None
    if rank == 0:
        Path("logs").mkdir(exist_ok=True)
        log = open(Path("logs") / f"{env.get('RUN_ID', DEFAULT_RUN_ID)}.txt", "w", encoding="utf-8")
        sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
    try:
        return _run(cfg, root, list(baked["eval"]))
    except (ValueError, FileNotFoundError) as exc:
        print(f"train_gpt.py: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if log is not None:
            sys.stdout, sys.stderr = sys.stdout.stream, sys.stderr.stream
            log.close()


def _run(cfg: dict[str, Any], root: Path, eval_args: list[str]) -> int:
    from golf_lit.eval.cli import parse_config
    from golf_lit.eval.evaluator import Evaluator
    from golf_lit.runs.export import ARTIFACT_NAME
    from golf_lit.train.cli import run_fit

    cli = run_fit({"fit": cfg})
    export = next((cb for cb in cli.trainer.callbacks if type(cb).__name__ == "ArtifactExport"), None)
    if not eval_args or export is None:
        return 0
    artifact = export.output_dir(cli.trainer) / ARTIFACT_NAME
    data = cfg["data"]
    args = ["--artifact", str(artifact), *eval_args, "--val_files", str(data["val_files"]),
            "--tokenizer", str(data["tokenizer_path"]), "--report", str(root / "eval.json")]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not any(a == "--devices" or a.startswith("--devices=") for a in eval_args):
        args += ["--devices", str(world)]  # under torchrun every rank scores its share, as in training
    Evaluator(parse_config(args)).run()
    return 0

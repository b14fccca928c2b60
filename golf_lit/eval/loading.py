"""What sits beside an artifact: its model config, the data it was exported with (trusted only when golf-lit
wrote it for exactly this file), and loading its weights into a GPT."""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import fields
from pathlib import Path
from typing import Any

from golf_lit.data.paths import SAMPLE_PREFIX, resolve
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.model.size import check_model_size

MODEL_CONFIG_FILES = ("config.json", "config.yaml")
WRITTEN_BY = "golf-lit"
"""Value of ``written_by`` in the config.json that golf-lit's export writes beside an artifact."""
DATA_KEYS = {"val_files": "val_files", "tokenizer_path": "tokenizer", "train_seq_len": "sliding.seq_len"}
"""config.json ``data`` entry -> eval option it can default."""
BYTE_KEYS = ("val_files", "tokenizer")
"""Defaults that decide which bytes are scored and how they are counted (the shards and any byte sidecar beside
them, the tokenizer's byte tables): taken from a golf-lit-marked config.json only when they name the bundled
sample, otherwise only with ``--data_from_artifact true``."""


def is_bundled_sample(value: Any) -> bool:
    """A ``sample:`` path that stays inside the bundled sample (no ``..``, not absolute)."""
    if not isinstance(value, str) or not value.startswith(SAMPLE_PREFIX):
        return False
    rel = value[len(SAMPLE_PREFIX) :]
    return bool(rel) and not rel.startswith(("/", "\\")) and ".." not in rel.replace("\\", "/").split("/")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance(artifact: str | Path) -> dict[str, str]:
    """The entries export adds to config.json so that eval can tell it wrote it for exactly this artifact."""
    return {"written_by": WRITTEN_BY, "artifact": Path(artifact).name, "artifact_sha256": file_sha256(artifact)}


def load_model_config_file(path: str | Path) -> ModelConfig:
    """ModelConfig from a JSON/YAML file: its ``model`` entry (export's ``config.json``) or the whole mapping.

    Keys that are not ModelConfig fields (e.g. ``optim``, ``compile`` of a training config) are ignored.

    Raises:
        ValueError: Unreadable, not a mapping, invalid values, or a model too large for a 16 MB artifact
            (:func:`golf_lit.model.size.check_model_size`); the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model_config: {str(p)!r} not found")
    text = p.read_text()
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json/yaml syntax errors
        raise ValueError(f"{p}: not a readable JSON/YAML model config ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if isinstance(data, dict) and isinstance(data.get("init_args"), dict):
        data = data["init_args"]
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping of ModelConfig fields (or one under the key 'model')")
    names = {f.name for f in fields(ModelConfig)}
    try:
        cfg = ModelConfig(**{k: v for k, v in data.items() if k in names})
    except (TypeError, ValueError, OverflowError) as exc:  # wrong types ("two" layers) or impossible values
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{p}: not a valid model config: {first}") from None
    check_model_size(cfg, str(p))  # before anything is built from it (load_model checks the final config again)
    return cfg


def find_model_config(artifact: str | Path, model_config: str | None = None) -> ModelConfig:
    """The model config for ``artifact``: ``model_config`` if given, else a config file beside it, else defaults."""
    if model_config:
        return load_model_config_file(model_config)
    for name in MODEL_CONFIG_FILES:
        candidate = Path(artifact).parent / name
        if candidate.is_file():
            return load_model_config_file(candidate)
    return ModelConfig()


def artifact_data_defaults(artifact: str | Path, trust: bool = False) -> tuple[dict[str, Any], str]:
    """Data settings recorded beside an artifact (config.json key ``data``), if they may serve as eval defaults.

    They are used when ``trust`` is set (``--data_from_artifact true``) or when the config.json carries
    golf-lit's mark and the sha256 of exactly this artifact (export writes both). Anyone can forge both, so with
    the mark alone ``val_files`` and ``tokenizer`` (which decide the bytes scored and how they are counted) apply
    only when both name the bundled sample: a file of unknown origin cannot choose the data it is scored on.

    Returns:
        ``({"val_files", "tokenizer", "sliding.seq_len"} entries that apply (maybe none), why)``.
    """
    art = Path(resolve(str(artifact)))
    path = art.parent / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: a deeply nested file
        return {}, f"no readable {path}"
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict):
        return {}, f"{path} records no data"
    found = {dest: data[src] for src, dest in DATA_KEYS.items() if data.get(src) is not None}
    if trust:
        return found, f"{path} (--data_from_artifact)"
    if config.get("written_by") != WRITTEN_BY or not config.get("artifact_sha256"):
        return {}, f"ignored {path}: not written by golf-lit's export (pass --data_from_artifact true to use it)"
    try:
        ok = art.is_file() and file_sha256(art) == config["artifact_sha256"]
    except OSError:
        ok = False
    if not ok:
        return {}, f"ignored {path}: its artifact_sha256 is not {art.name}'s (pass --data_from_artifact true to use it)"
    # Anyone can write golf-lit's mark and an artifact's sha256 into a config.json: the mark alone never lets it
    # pick data outside golf-lit's own sample (the shards, a byte sidecar beside them, the tokenizer's byte tables).
    foreign = sorted(k for k in BYTE_KEYS if k in found and not is_bundled_sample(found[k]))
    if foreign:
        found = {k: v for k, v in found.items() if k not in BYTE_KEYS}
        return found, (
            f"{path} (golf-lit export, sha256 checked; its val_files and tokenizer ignored: {' and '.join(foreign)} "
            "outside the bundled sample, pass --data_from_artifact true to use them)"
        )
    return found, f"{path} (golf-lit export, sha256 checked)"


def load_model(artifact: str | Path, cfg: ModelConfig) -> GPT:
    """A GPT with the artifact's (dequantized) weights, on the CPU in fp32.

    ``cfg`` is bounded (:func:`golf_lit.model.size.check_model_size`) and the file is decoded and checked against
    its shapes on the meta device before the model is allocated.

    Raises:
        golf_lit.model.size.ModelSizeError: ``cfg`` describes a model no 16 MB artifact can hold.
        golf_lit.artifact.ArtifactError: naming the file, for anything that is not an artifact or a plain
            state dict of tensors (files holding other Python objects are refused, never unpickled).
    """
    from golf_lit.artifact import ArtifactError, load_record_checkpoint

    # The config may come from a file beside the artifact: bound the model and check the file's tensors against
    # its shapes (on the meta device) before the real model is allocated.
    template = check_model_size(cfg, f"{artifact}: model config")
    try:
        state = load_record_checkpoint(artifact, template)
    except ArtifactError as exc:
        if isinstance(exc.__cause__, pickle.UnpicklingError):  # torch's weights-only refusal, whose advice to
            # retry with weights_only=False would execute code from the file
            raise ArtifactError(
                f"{artifact}: not a golf-lit/record artifact: it holds Python objects other than tensors, which "
                "golf-lit refuses to unpickle"
            ) from exc
        raise
    model = GPT(cfg)
    model.load_state_dict(state, strict=True)
    return model

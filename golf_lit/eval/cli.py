"""``golf-lit eval``: score an artifact with its strategies (roundtrip, sliding, ttt; n-gram mixer on top).

Examples::

    golf-lit eval --artifact runs/smoke/final_model.int6.ptz --strategy roundtrip,sliding,ttt --ngram true \\
        --val_files 'sample:fineweb10B_sp1024/fineweb_val_*.bin' --tokenizer sample:tokenizers/fineweb_1024_bpe.model
    golf-lit eval --config eval.yaml --devices 8 --accelerator cuda --precision bf16-mixed --report eval.json

Model config precedence: ``--model.*`` flags / YAML ``model:`` > ``--model_config`` file > ``config.json`` or
``config.yaml`` beside the artifact > ModelConfig defaults. ``val_files``, ``tokenizer`` and ``sliding.seq_len``
not given as flags are the challenge's (``./data/...`` relative to the working directory, 2048), unless the
config.json beside the artifact records them (key ``data``) and either golf-lit's export wrote it for exactly
this artifact (its mark and sha256 match; ``val_files`` and ``tokenizer`` then only when they name the bundled
sample, docs/safety.md) or ``--data_from_artifact true`` is given. Options are spelled with
underscores (``--val_files``); the ``golf-lit`` dispatcher accepts hyphens (``--val-files``) too.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import fields
from typing import Any

from golf_lit.eval.budget import EvalBudgetError
from golf_lit.eval.config import EvalConfig
from golf_lit.eval.evaluator import Evaluator
from golf_lit.eval.loading import artifact_data_defaults, find_model_config
from golf_lit.model.config import ModelConfig
from golf_lit.options import UsageError, one_line


def build_parser():
    """The jsonargparse parser of ``golf-lit eval`` (every EvalConfig field, plus ``--config`` YAML files)."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="golf-lit eval", description=(__doc__ or "").split("\n\n")[0],  # None when packed
                            exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below.")
    parser.add_class_arguments(EvalConfig, None, skip={"model", "data_origin"})
    parser.add_class_arguments(ModelConfig, "model")
    return parser


def parse_config(argv: list[str]) -> EvalConfig:
    """Parse ``argv`` into an EvalConfig, resolving the model config and data as described in the module docstring."""
    from jsonargparse import ArgumentError

    parser = build_parser()
    defaults = {dest: parser.get_defaults()[dest] for dest in ("val_files", "tokenizer", "sliding.seq_len")}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first = parser.parse_args(argv)
            base = find_model_config(first.artifact, first.model_config)
            parser.set_defaults({f"model.{f.name}": getattr(base, f.name) for f in fields(ModelConfig)})
            recorded, why = artifact_data_defaults(first.artifact, trust=first.data_from_artifact)
            origin: dict[str, str] = {}
            for dest, default in defaults.items():
                if first[dest] != default:
                    origin[dest] = "flag"
                elif dest in recorded:
                    origin[dest] = "artifact"
                else:
                    origin[dest] = "default"
            origin["note"] = why
            parser.set_defaults(recorded)
            init = parser.instantiate_classes(parser.parse_args(argv))
    except ArgumentError as exc:
        raise UsageError(one_line(exc)) from None
    kwargs: dict[str, Any] = {f.name: init.get(f.name) for f in fields(EvalConfig) if f.name in init}
    return EvalConfig(**kwargs, data_origin=origin)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``golf-lit eval`` (the top-level dispatcher passes the arguments after ``eval``).

    Args:
        argv: Arguments; default ``sys.argv[1:]``.

    Returns:
        Process exit status: 0 on success, 2 when a phase was refused because the budget was spent.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    cfg = parse_config(argv)
    try:
        Evaluator(cfg).run()
    except EvalBudgetError as exc:
        print(f"golf-lit eval: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as exc:
        print(f"golf-lit eval: error: {exc}", file=sys.stderr)
        sys.exit(2)

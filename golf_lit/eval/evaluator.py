"""The ``Evaluator``: a Fabric program that loads an artifact once and scores it with each chosen strategy.

:class:`Evaluator` checks what can be checked before any work (strategies, output path) and launches the
ranks; on each rank :class:`RankEvaluation` loads the data and the model, warms the compiled forwards up on
random tokens, and runs the strategies (``golf_lit.eval.strategies``) through their one interface: their
float64 sums are all-reduced once per run and reported as val_loss / val_bpb, every phase timed against the
evaluation budget (``golf_lit.eval.budget``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric
from torch import Tensor

from golf_lit.data.byte_source import load_byte_source
from golf_lit.data.manifest import check_dataset
from golf_lit.data.paths import resolve
from golf_lit.data.shards import check_token_ids, load_validation_tokens
from golf_lit.data.tokenizer import load_tokenizer
from golf_lit.data.vocab import require_vocab_match
from golf_lit.eval.budget import EvalBudget
from golf_lit.eval.config import EvalConfig, require_accelerator
from golf_lit.eval.loading import find_model_config, load_model, require_tokenizer_match
from golf_lit.eval.report import (
    check_output_path,
    data_line,
    format_table,
    record_line,
    result_entry,
    timing_line,
    write_json,
)
from golf_lit.eval.scorer import MODEL
from golf_lit.eval.strategies import REGISTRY, EvalContext, Strategy
from golf_lit.eval.sums import ScoreSums

_WEIGHT_DTYPES = {"64-true": torch.float64, "64": torch.float64, "bf16-true": torch.bfloat16, "16-true": torch.float16}
WARMUP_SEED = 0
"""Seed of the random tokens the compile warm-up runs on (never validation tokens)."""


def build_strategies(cfg: EvalConfig) -> list[Strategy]:
    """The strategy runs ``cfg`` asks for, in order (a sweep gives several runs of one strategy)."""
    runs = [run for name in cfg.strategies for run in REGISTRY[name].from_config(cfg)]
    labels = [run.label for run in runs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"strategy: two runs would report under the same name: {labels}")
    return runs


def reduce_sums(fabric: Fabric, sums: dict[str, ScoreSums]) -> dict[str, ScoreSums]:
    """Add every variant's sums across ranks in one float64 all-reduce."""
    local = torch.tensor([[s.nll_sum, s.token_count, s.byte_count] for s in sums.values()], dtype=torch.float64)
    total = fabric.all_reduce(local.to(fabric.device), reduce_op="sum") if fabric.world_size > 1 else local
    return {name: ScoreSums(*row) for name, row in zip(sums, total.cpu().tolist())}


class Evaluator:
    """Scores one artifact with the strategies of ``cfg`` on the ranks Fabric launches.

    Args:
        cfg: What to score and how.
        fabric: An existing Fabric (already configured); default: one built from ``cfg``'s device fields.
        clock: Monotonic seconds for the timings and the budget (tests pass a fake one).

    Example:
        ``Evaluator(EvalConfig(artifact="runs/smoke/artifact/final_model.int6.ptz", strategy="sliding")).run()``
    """

    def __init__(self, cfg: EvalConfig, fabric: Fabric | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        build_strategies(cfg)  # fail before launching
        self.cfg = cfg
        self.clock = clock
        if fabric is None:
            require_accelerator(cfg.accelerator)  # one line, not Fabric's traceback (not in EvalConfig: parsing a
            # config written for a GPU machine stays possible anywhere)
        self.fabric = fabric or Fabric(
            accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.fabric_strategy, precision=cfg.precision
        )

    def run(self) -> dict[str, Any]:
        """Check the report path, launch the ranks and evaluate; returns the report (on every rank)."""
        check_output_path(self.cfg.report, "report")
        return self.fabric.launch(_evaluate_on_rank, self.cfg, self.clock)


def _evaluate_on_rank(fabric: Fabric, cfg: EvalConfig, clock: Callable[[], float]) -> dict[str, Any]:
    return RankEvaluation(cfg, fabric, clock).run()


class RankEvaluation:
    """One rank's evaluation: setup, warm-up, the strategies in order, the report (rank 0 prints and writes).

    Args:
        cfg: What to score and how.
        fabric: The launched Fabric.
        clock: Monotonic seconds (timings and budget).
    """

    def __init__(self, cfg: EvalConfig, fabric: Fabric, clock: Callable[[], float] = time.perf_counter) -> None:
        self.cfg = cfg
        self.fabric = fabric
        self.budget = EvalBudget(cfg.eval_budget_seconds, clock)
        self.strategies = build_strategies(cfg)
        self.results: list[dict[str, Any]] = []
        self.byte_files: tuple[str, ...] = ()  # the CaseOps byte sidecar shards, when bytes come from them

    def run(self) -> dict[str, Any]:
        """Set up, warm up (when compiling), then run every strategy; returns the report."""
        ctx = self.setup()
        self.warmup(ctx)
        for strategy in self.strategies:
            self.score(strategy, ctx)
        self.write_report()
        if self.fabric.is_global_zero:
            if len(self.results) > 1:
                self.fabric.print(format_table(self.results))
            self.fabric.print(timing_line(self.budget.summary()))
        return self.report()

    def setup(self) -> EvalContext:
        """Load the tokens and byte tables (checked against every strategy), then the model onto this rank."""
        cfg, fabric = self.cfg, self.fabric
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        t0 = self.budget.clock()
        self.model_config = cfg.model or find_model_config(cfg.artifact, cfg.model_config)
        vocab = self.model_config.vocab_size
        sp = load_tokenizer(resolve(cfg.tokenizer))
        require_vocab_match(vocab, int(sp.vocab_size()), cfg.tokenizer)
        require_tokenizer_match(cfg.artifact, cfg.tokenizer)  # the sha256 export recorded, if any
        # sizes, header counts and the tokenizer's sha256 against a tokenize manifest, if any
        check_dataset(resolve(cfg.val_files), tokenizer=resolve(cfg.tokenizer))
        tokens = load_validation_tokens(resolve(cfg.val_files), cfg.sliding.seq_len)
        if cfg.max_tokens is not None:
            tokens = tokens[: cfg.max_tokens + 1]
        luts = load_byte_source(resolve(cfg.val_files), sp, vocab, tokens.numel(),  # LUTs, or the CaseOps sidecar
                                tokenizer_path=cfg.tokenizer)
        self.byte_files = tuple(getattr(luts, "files", ()))
        check_token_ids(tokens, vocab, f"val_files {cfg.val_files}")
        self.tokens = tokens
        for strategy in self.strategies:
            strategy.check(self.num_targets)
        self.budget.record("data", t0)
        if fabric.is_global_zero:
            fabric.print(data_line(self.data()))
        t0 = self.budget.clock()
        model = load_model(resolve(cfg.artifact), self.model_config)
        model = model.to(device=fabric.device, dtype=_WEIGHT_DTYPES.get(cfg.precision, torch.float32)).eval()
        self.budget.record("deserialize", t0)
        compile_fn = (lambda m: torch.compile(m, dynamic=False)) if cfg.compile else None
        return EvalContext(
            model=model, tokens=tokens, luts=luts, forward=compile_fn(model) if compile_fn else model,
            device=fabric.device, rank=fabric.global_rank, world_size=fabric.world_size, autocast=fabric.autocast,
            all_reduce=self._all_reduce_sum,
            compile_fn=compile_fn, mixers=cfg.mixers if cfg.ngram else (), store=cfg.ngram_store,
        )

    @property
    def num_targets(self) -> int:
        """Number of target positions of the (possibly truncated) validation stream."""
        return self.tokens.numel() - 1

    def _all_reduce_sum(self, t: Tensor) -> Tensor:
        return self.fabric.all_reduce(t, reduce_op="sum")

    def warmup(self, ctx: EvalContext) -> None:
        """Compile warm-up: every strategy that compiles (``--compile``, ``--phased_ttt.compile``) scores a stream
        of random tokens once.

        The stream comes from a fixed seed and the model's vocabulary only, so nothing about the validation
        tokens reaches the compiled code or any state before the timed strategies start. Timed as ``warmup``
        (0 when nothing compiles).
        """
        t0 = self.budget.clock()
        compiling = [s for s in self.strategies if s.compiles(ctx)]
        if not compiling:
            self.budget.record("warmup", t0)
            return
        self.budget.require("the compile warm-up", self._spent())
        gen = torch.Generator().manual_seed(WARMUP_SEED)
        vocab = self.model_config.vocab_size
        for strategy in compiling:
            tokens = torch.randint(0, vocab, (strategy.warmup_targets(ctx.world_size) + 1,), generator=gen)
            strategy.warmup(replace(ctx, tokens=tokens, mixers=(), progress=None))
        self._sync()
        self.budget.record("warmup", t0)

    def score(self, strategy: Strategy, ctx: EvalContext) -> None:
        """Run one strategy (refused if the budget is spent), check its count, report every variant."""
        cfg, fabric = self.cfg, self.fabric
        self.budget.require(strategy.label, self._spent())
        bar = None
        if cfg.progress and fabric.is_global_zero:
            from tqdm.auto import tqdm

            total = strategy.rank_targets(self.num_targets, fabric.global_rank, fabric.world_size)
            bar = tqdm(total=total, desc=strategy.label, unit="tok", unit_scale=True, dynamic_ncols=True, leave=False)
        fabric.barrier()
        t0 = self.budget.clock()
        try:
            local = strategy.score(replace(ctx, mixers=ctx.mixers if strategy.supports_ngram else (),
                                           progress=bar.update if bar else None))
        finally:
            if bar:
                bar.close()
        sums = reduce_sums(fabric, local)
        self._sync()
        seconds = self.budget.record(strategy.label, t0)
        expected = strategy.expected_targets(self.num_targets)
        base = f"{cfg.log_prefix}_{strategy.label}"
        for variant, s in sums.items():
            if s.token_count != expected:
                raise RuntimeError(
                    f"{base}: scored {s.token_count:.0f} positions but the stream has {expected} "
                    "(invariant 4: every token exactly once)"
                )
            mixer = next((m for m in cfg.mixers if m.name == variant), None)
            settings = {**strategy.settings(), **({"ngram": asdict(mixer)} if mixer is not None else {})}
            name = base if variant == MODEL else f"{base}_{variant}"
            entry = result_entry(name, strategy.name, variant, s, seconds, settings)
            self.results.append(entry)
            fabric.print(record_line(entry, strategy.line_extra()))
        self.write_report()

    def _spent(self) -> bool:
        """Rank 0's budget decision, shared so that every rank refuses (or starts) the same phase."""
        spent = self.budget.spent()
        return bool(self.fabric.broadcast(spent, src=0)) if self.fabric.world_size > 1 else spent

    def _sync(self) -> None:
        if self.fabric.device.type == "cuda":
            torch.cuda.synchronize(self.fabric.device)

    def data(self) -> dict[str, Any]:
        """The data every result is scored on, and where each setting came from."""
        cfg = self.cfg
        return {
            "val_files": cfg.val_files,
            "tokenizer": cfg.tokenizer,
            "byte_source": (f"byte sidecar {', '.join(self.byte_files)}" if self.byte_files
                            else f"byte tables of tokenizer {cfg.tokenizer}"),
            "seq_len": cfg.sliding.seq_len,
            "max_tokens": cfg.max_tokens,
            "num_targets": self.num_targets,
            "origin": dict(cfg.data_origin),
        }

    def report(self) -> dict[str, Any]:
        """The JSON report (schema in docs/evaluation.md, "JSON report")."""
        cfg = self.cfg
        artifact = Path(resolve(cfg.artifact))
        return {
            "artifact": str(artifact),
            "artifact_bytes": artifact.stat().st_size if artifact.is_file() else None,
            "model": self.model_config.to_dict(),
            "val_files": cfg.val_files,
            "tokenizer": cfg.tokenizer,
            "data": self.data(),
            "num_targets": self.num_targets,
            "world_size": self.fabric.world_size,
            "device": str(self.fabric.device),
            "precision": cfg.precision,
            "timings": self.budget.summary(),
            "results": self.results,
        }

    def write_report(self) -> None:
        """Write the report atomically (rank 0 only)."""
        if self.cfg.report and self.fabric.is_global_zero:
            write_json(self.cfg.report, self.report(), "report")

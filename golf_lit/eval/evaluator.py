"""The ``Evaluator``: a Fabric program that loads an artifact once and scores it with each chosen strategy.

Fabric launches the ranks and provides the device, the precision's autocast and the collectives; the
strategies (``standard``, ``sliding``, ``ttt``, with the ``ngram`` mixer on top) are plain functions that
return float64 sums, which are all-reduced once per strategy run and converted to val_loss / val_bpb.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric
from torch import Tensor, nn

from golf_lit.config import ModelConfig
from golf_lit.data.shards import load_validation_tokens
from golf_lit.data.tokenizer import ByteLUTs, build_byte_luts, load_tokenizer
from golf_lit.eval.ngram import NgramConfig, NgramStoreConfig
from golf_lit.eval.scorer import MODEL
from golf_lit.eval.sliding import SlidingConfig, rank_positions, score_sliding
from golf_lit.eval.standard import evaluate_standard
from golf_lit.eval.sums import ScoreSums
from golf_lit.eval.ttt import TTTConfig, score_ttt
from golf_lit.io import atomic_write_json
from golf_lit.model.gpt import GPT
from golf_lit.paths import DEFAULT_TOKENIZER, DEFAULT_VAL_FILES, resolve

STRATEGIES = ("roundtrip", "sliding", "ttt")
_WEIGHT_DTYPES = {"64-true": torch.float64, "64": torch.float64, "bf16-true": torch.bfloat16, "16-true": torch.float16}
_AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
MODEL_CONFIG_FILES = ("config.json", "config.yaml")


@dataclass(kw_only=True)
class EvalConfig:
    """What ``golf-lit eval`` scores and how (every field is a CLI flag / YAML key)."""

    artifact: str
    """Artifact to score: golf-lit's or a record's ``final_model.int6.ptz``, or a record ``final_model.pt``."""
    model_config: str | None = None
    """JSON/YAML file with the model config (key ``model``); default: ``config.json``/``config.yaml`` beside the
    artifact, else ModelConfig defaults. ``--model.*`` flags override single fields."""
    model: ModelConfig | None = None
    """The model config; None resolves it from ``model_config`` as described there."""
    val_files: str = DEFAULT_VAL_FILES
    """Validation shard glob (``sample:`` = the bundled sample)."""
    tokenizer: str = DEFAULT_TOKENIZER
    """SentencePiece model for the byte tables (``sample:`` = the bundled one)."""
    max_tokens: int | None = None
    """Score only the first this many positions (quick runs); None = the whole validation set."""
    strategy: str = "roundtrip,sliding"
    """Comma-separated strategies, run in order: roundtrip (non-overlapping), sliding, ttt."""
    ngram: bool = False
    """Also score every setting in ``mixers`` on top of sliding and ttt (sharing their forward passes)."""
    mixers: list[NgramConfig] = field(default_factory=lambda: [NgramConfig()])
    """N-gram mixer settings (a sweep when more than one)."""
    ngram_store: NgramStoreConfig = field(default_factory=NgramStoreConfig)
    """How the n-gram counts are updated."""
    sliding: SlidingConfig = field(default_factory=SlidingConfig)
    """Window length / stride / batch of the sliding and ttt strategies (seq_len also cuts roundtrip sequences)."""
    roundtrip_batch_seqs: int = 32
    """Sequences per forward in the roundtrip strategy."""
    ttt: TTTConfig = field(default_factory=TTTConfig)
    """Score-first TTT settings."""
    ttt_sweep: list[TTTConfig] = field(default_factory=list)
    """If given, run ttt once per setting here (each from the pristine artifact) instead of ``ttt``."""
    accelerator: str = "auto"
    """Fabric accelerator: cpu, cuda, auto."""
    devices: int = 1
    """Number of ranks."""
    fabric_strategy: str = "auto"
    """Fabric strategy (auto, ddp, ddp_spawn; gloo on CPU, nccl on GPU)."""
    precision: str = "32-true"
    """Fabric precision: 32-true, 64-true, bf16-mixed, 16-mixed, bf16-true."""
    compile: bool = False
    """torch.compile the forwards (roundtrip, sliding, and the adapted copy in ttt)."""
    num_threads: int | None = None
    """torch CPU threads per rank (None = torch's default)."""
    report: str | None = None
    """JSON report path (written atomically by rank 0 after every strategy)."""
    log_prefix: str = "final_int6"
    """Prefix of the record-shaped log lines (``final_int6_sliding_window val_loss:... val_bpb:...``)."""
    progress: bool = True
    """Show a tokens/s progress bar on rank 0."""

    def __post_init__(self) -> None:
        for name in self.strategies:
            if name not in STRATEGIES:
                raise ValueError(f"strategy: unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
        if not self.strategies:
            raise ValueError(f"strategy: give at least one of {', '.join(STRATEGIES)}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {self.max_tokens}")
        if self.devices < 1:
            raise ValueError(f"devices: must be >= 1, got {self.devices}")
        if self.roundtrip_batch_seqs < 1:
            raise ValueError(f"roundtrip_batch_seqs: must be >= 1, got {self.roundtrip_batch_seqs}")
        names = [m.name for m in self.mixers]
        if self.ngram and (not names or len(set(names)) != len(names)):
            raise ValueError(f"mixers: need at least one setting with unique names, got {names}")
        ttt_names = [t.name for t in self.ttt_runs]
        if len(set(ttt_names)) != len(ttt_names):
            raise ValueError(f"ttt_sweep: names must be unique, got {ttt_names}")

    @property
    def strategies(self) -> list[str]:
        """The strategies to run, in order."""
        return [s.strip() for s in self.strategy.split(",") if s.strip()]

    @property
    def ttt_runs(self) -> list[TTTConfig]:
        """The TTT settings to run."""
        return list(self.ttt_sweep) or [self.ttt]


def load_model_config_file(path: str | Path) -> ModelConfig:
    """ModelConfig from a JSON/YAML file: its ``model`` entry (export's ``config.json``) or the whole mapping.

    Keys that are not ModelConfig fields (e.g. ``optim``, ``compile`` of a training config) are ignored.
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
    return ModelConfig(**{k: v for k, v in data.items() if k in names})


def find_model_config(artifact: str | Path, model_config: str | None = None) -> ModelConfig:
    """The model config for ``artifact``: ``model_config`` if given, else a config file beside it, else defaults."""
    if model_config:
        return load_model_config_file(model_config)
    for name in MODEL_CONFIG_FILES:
        candidate = Path(artifact).parent / name
        if candidate.is_file():
            return load_model_config_file(candidate)
    return ModelConfig()


def artifact_data_defaults(artifact: str | Path) -> dict[str, Any]:
    """Data settings recorded beside an artifact by export (``config.json`` key ``data``), as eval defaults.

    Returns:
        ``{"val_files", "tokenizer", "sliding.seq_len"}`` entries for those that were recorded (maybe none).
    """
    path = Path(resolve(str(artifact))).parent / "config.json"
    try:
        data = json.loads(path.read_text()).get("data") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    keys = {"val_files": "val_files", "tokenizer_path": "tokenizer", "train_seq_len": "sliding.seq_len"}
    return {dest: data[src] for src, dest in keys.items() if data.get(src) is not None}


def load_model(artifact: str | Path, cfg: ModelConfig) -> GPT:
    """A GPT with the artifact's (dequantized) weights, on the CPU in fp32."""
    from golf_lit.quant import load_record_checkpoint

    model = GPT(cfg)
    state = load_record_checkpoint(artifact, model.state_dict())
    model.load_state_dict(state, strict=True)
    return model


def reduce_sums(fabric: Fabric, sums: dict[str, ScoreSums]) -> dict[str, ScoreSums]:
    """Add every variant's sums across ranks in one float64 all-reduce."""
    local = torch.tensor([[s.nll_sum, s.token_count, s.byte_count] for s in sums.values()], dtype=torch.float64)
    total = fabric.all_reduce(local.to(fabric.device), reduce_op="sum") if fabric.world_size > 1 else local
    return {name: ScoreSums(*row) for name, row in zip(sums, total.cpu().tolist())}


def _progress(fabric: Fabric, cfg: EvalConfig, desc: str, total: int):
    if not (cfg.progress and fabric.is_global_zero):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tok", unit_scale=True, dynamic_ncols=True, leave=False)


class Evaluator:
    """Scores one artifact with the strategies of ``cfg`` on the ranks Fabric launches.

    Args:
        cfg: What to score and how.
        fabric: An existing Fabric (already configured); default: one built from ``cfg``'s device fields.

    Example:
        ``Evaluator(EvalConfig(artifact="runs/smoke/artifact/final_model.int6.ptz", strategy="sliding")).run()``
    """

    def __init__(self, cfg: EvalConfig, fabric: Fabric | None = None) -> None:
        self.cfg = cfg
        self.fabric = fabric or Fabric(
            accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.fabric_strategy, precision=cfg.precision
        )

    def run(self) -> dict[str, Any]:
        """Launch the ranks and evaluate; returns the report (on every rank)."""
        return self.fabric.launch(_launched, self.cfg)

    # Everything below runs inside the launched processes.

    def setup(self) -> None:
        """Load tokens, byte tables and the model onto this rank's device."""
        cfg, fabric = self.cfg, self.fabric
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.model_config = cfg.model or find_model_config(cfg.artifact, cfg.model_config)
        model = load_model(resolve(cfg.artifact), self.model_config)
        tokens = load_validation_tokens(resolve(cfg.val_files), cfg.sliding.seq_len)
        if cfg.max_tokens is not None:
            tokens = tokens[: cfg.max_tokens + 1]
        vocab = self.model_config.vocab_size
        if int(tokens.max()) >= vocab:
            raise ValueError(f"val_files: token id {int(tokens.max())} is outside model.vocab_size={vocab}")
        self.tokens = tokens
        sp = load_tokenizer(resolve(cfg.tokenizer))
        if int(sp.vocab_size()) > vocab:
            raise ValueError(f"tokenizer: {cfg.tokenizer!r} has {sp.vocab_size()} pieces > model.vocab_size={vocab}")
        self.luts: ByteLUTs = build_byte_luts(sp, vocab)
        self.model = model.to(device=fabric.device, dtype=_WEIGHT_DTYPES.get(cfg.precision, torch.float32)).eval()
        self.compile_fn = (lambda m: torch.compile(m, dynamic=False)) if cfg.compile else None
        self.forward_model: nn.Module = self.compile_fn(self.model) if self.compile_fn else self.model
        self.results: list[dict[str, Any]] = []

    def autocast(self) -> contextlib.AbstractContextManager:
        """Fabric's precision context for forwards."""
        return self.fabric.autocast()

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Sum ``t`` across ranks (TTT gradients)."""
        return self.fabric.all_reduce(t, reduce_op="sum")

    def _timed(self, fn) -> tuple[dict[str, ScoreSums], float]:
        self.fabric.barrier()
        t0 = time.perf_counter()
        local = fn()
        sums = reduce_sums(self.fabric, local)
        if self.fabric.device.type == "cuda":
            torch.cuda.synchronize(self.fabric.device)
        return sums, time.perf_counter() - t0

    def _emit(self, strategy: str, base_name: str, sums: dict[str, ScoreSums], seconds: float, expected: int,
              settings: dict[str, Any], line_extra: str = "") -> None:
        for variant, s in sums.items():
            if s.token_count != expected:
                raise RuntimeError(
                    f"{base_name}: scored {s.token_count:.0f} positions but the stream has {expected} "
                    "(invariant 4: every token exactly once)"
                )
            name = base_name if variant == MODEL else f"{base_name}_{variant}"
            mixer = next((m for m in self.cfg.mixers if m.name == variant), None)
            entry = {
                "name": name,
                "strategy": strategy,
                "variant": variant,
                "val_loss": s.val_loss,
                "val_bpb": s.val_bpb,
                "tokens": int(s.token_count),
                "bytes": int(s.byte_count),
                "seconds": seconds,
                "tokens_per_second": s.token_count / seconds if seconds > 0 else math.inf,
                "settings": {**settings, **({"ngram": asdict(mixer)} if mixer is not None else {})},
            }
            self.results.append(entry)
            self.fabric.print(
                f"{name} val_loss:{s.val_loss:.8f} val_bpb:{s.val_bpb:.8f}{line_extra} eval_time:{seconds * 1000:.0f}ms"
            )
        self.write_report()

    def evaluate(self) -> dict[str, Any]:
        """Run every configured strategy; returns the report."""
        cfg, fabric = self.cfg, self.fabric
        rank, world = fabric.global_rank, fabric.world_size
        n = self.tokens.numel() - 1
        mixers = cfg.mixers if cfg.ngram else []
        sl = cfg.sliding
        for strategy in cfg.strategies:
            if strategy == "roundtrip":
                dtype = _AUTOCAST_DTYPES.get(cfg.precision)

                def fn():
                    return {MODEL: evaluate_standard(self.forward_model, self.tokens, self.luts, sl.seq_len,
                                                     cfg.roundtrip_batch_seqs, fabric.device, rank, world, dtype)}

                sums, sec = self._timed(fn)
                self._emit("roundtrip", f"{cfg.log_prefix}_roundtrip", sums, sec, (n // sl.seq_len) * sl.seq_len,
                           {"seq_len": sl.seq_len})
            elif strategy == "sliding":
                bar = _progress(fabric, cfg, "sliding", rank_positions(n, sl, rank, world))

                def fn():
                    return score_sliding(self.forward_model, self.tokens, self.luts, sl, rank, world, mixers=mixers,
                                         store=cfg.ngram_store, device=fabric.device, autocast=self.autocast,
                                         progress=bar.update if bar else None)

                sums, sec = self._timed(fn)
                if bar:
                    bar.close()
                self._emit("sliding", f"{cfg.log_prefix}_sliding_window", sums, sec, n, asdict(sl),
                           f" stride:{sl.stride}")
            else:
                for tcfg in cfg.ttt_runs:
                    bar = _progress(fabric, cfg, tcfg.name, -(-n // world))

                    def fn(tcfg=tcfg, bar=bar):
                        return score_ttt(self.model, self.tokens, self.luts, tcfg, rank, world, sliding=sl,
                                         mixers=mixers, store=cfg.ngram_store, device=fabric.device,
                                         autocast=self.autocast, all_reduce=self.all_reduce_sum,
                                         progress=bar.update if bar else None, compile_model=self.compile_fn)

                    sums, sec = self._timed(fn)
                    if bar:
                        bar.close()
                    self._emit("ttt", f"{cfg.log_prefix}_{tcfg.name}_sliding_window", sums, sec, n,
                               {**asdict(sl), "ttt": asdict(tcfg)}, f" stride:{sl.stride} chunk:{tcfg.chunk_tokens}")
        if fabric.is_global_zero and len(self.results) > 1:
            fabric.print(format_table(self.results))
        return self.report()

    def report(self) -> dict[str, Any]:
        """The JSON report (see /work/notes/readme_eval.md for the schema)."""
        cfg = self.cfg
        artifact = Path(resolve(cfg.artifact))
        return {
            "artifact": str(artifact),
            "artifact_bytes": artifact.stat().st_size if artifact.is_file() else None,
            "model": self.model_config.to_dict(),
            "val_files": cfg.val_files,
            "tokenizer": cfg.tokenizer,
            "num_targets": self.tokens.numel() - 1,
            "world_size": self.fabric.world_size,
            "device": str(self.fabric.device),
            "precision": cfg.precision,
            "results": self.results,
        }

    def write_report(self) -> None:
        """Write the report atomically (rank 0 only)."""
        if self.cfg.report and self.fabric.is_global_zero:
            atomic_write_json(self.cfg.report, self.report())


def _launched(fabric: Fabric, cfg: EvalConfig) -> dict[str, Any]:
    evaluator = Evaluator(cfg, fabric)
    evaluator.setup()
    return evaluator.evaluate()


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of results (name, val_bpb, val_loss, tokens, seconds, tokens/s)."""
    width = max(len(r["name"]) for r in results)
    lines = [f"{'name':<{width}}  {'val_bpb':>10}  {'val_loss':>10}  {'tokens':>10}  {'seconds':>9}  {'tok/s':>10}"]
    for r in results:
        lines.append(
            f"{r['name']:<{width}}  {r['val_bpb']:>10.6f}  {r['val_loss']:>10.6f}  {r['tokens']:>10d}  "
            f"{r['seconds']:>9.2f}  {r['tokens_per_second']:>10.1f}"
        )
    return "\n".join(lines)

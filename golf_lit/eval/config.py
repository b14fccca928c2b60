"""``EvalConfig``: what ``golf-lit eval`` scores and how (every field is a CLI flag / YAML key)."""

from __future__ import annotations

from dataclasses import dataclass, field

from golf_lit.data.paths import DEFAULT_TOKENIZER, DEFAULT_VAL_FILES
from golf_lit.eval.ngram import NgramConfig, NgramStoreConfig
from golf_lit.eval.strategies import REGISTRY
from golf_lit.eval.strategies.phased_ttt import PhasedTTTConfig
from golf_lit.eval.strategies.sliding import SlidingConfig
from golf_lit.eval.strategies.ttt import TTTConfig
from golf_lit.model.config import ModelConfig

DEFAULT_EVAL_BUDGET_SECONDS = 600.0
"""The challenge's evaluation limit: 10 minutes on 8xH100."""


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
    """Validation shard glob (``sample:`` = the bundled sample); default: the challenge's, relative to the cwd."""
    tokenizer: str = DEFAULT_TOKENIZER
    """SentencePiece model for the byte tables (``sample:`` = the bundled one); its piece count must equal
    model.vocab_size."""
    data_from_artifact: bool = False
    """Take val_files / tokenizer / sliding.seq_len not given as flags from the ``data`` entry of the
    config.json beside the artifact even if golf-lit's export did not write it for this artifact (without this
    flag only a config.json carrying golf-lit's mark and this artifact's sha256 is used)."""
    max_tokens: int | None = None
    """Score only the first this many positions (quick runs); None = the whole validation set."""
    strategy: str = "roundtrip,sliding"
    """Comma-separated strategies, run in order (see golf_lit/eval/strategies): roundtrip, sliding, ttt, phased_ttt."""
    ngram: bool = False
    """Also score every setting in ``mixers`` on top of the strategies that support it (sliding, ttt), sharing
    their forward passes."""
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
    phased_ttt: PhasedTTTConfig = field(default_factory=PhasedTTTConfig)
    """Settings of the phased_ttt strategy (per-document LoRA + global SGD phases; top-config defaults)."""
    eval_budget_seconds: float = DEFAULT_EVAL_BUDGET_SECONDS
    """Wall-clock budget of the whole evaluation (deserialization, data, compile warm-up and every strategy);
    a strategy is refused once it is spent. 0 = no budget."""
    accelerator: str = "auto"
    """Fabric accelerator: cpu, cuda, auto."""
    devices: int = 1
    """Number of ranks."""
    fabric_strategy: str = "auto"
    """Fabric strategy (auto, ddp, ddp_spawn; gloo on CPU, nccl on GPU)."""
    precision: str = "32-true"
    """Fabric precision: 32-true, 64-true, bf16-mixed, 16-mixed, bf16-true."""
    compile: bool = False
    """torch.compile the forwards (warmed up on random tokens before the timed strategies)."""
    num_threads: int | None = None
    """torch CPU threads per rank (None = torch's default)."""
    report: str | None = None
    """JSON report path (written atomically by rank 0 after every strategy; checked writable before loading)."""
    log_prefix: str = "final_int6"
    """Prefix of the record-shaped log lines (``final_int6_sliding_window val_loss:... val_bpb:...``)."""
    progress: bool = True
    """Show a tokens/s progress bar on rank 0."""
    data_origin: dict[str, str] = field(default_factory=dict)
    """Where val_files / tokenizer / sliding.seq_len came from (``flag``, ``artifact``, ``default``); set by the
    CLI, shown in the report (not a flag)."""

    def __post_init__(self) -> None:
        for name in self.strategies:
            if name not in REGISTRY:
                raise ValueError(f"strategy: unknown strategy {name!r}; choose from {', '.join(REGISTRY)}")
        if not self.strategies:
            raise ValueError(f"strategy: give at least one of {', '.join(REGISTRY)}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {self.max_tokens}")
        if self.devices < 1:
            raise ValueError(f"devices: must be >= 1, got {self.devices}")
        if self.roundtrip_batch_seqs < 1:
            raise ValueError(f"roundtrip_batch_seqs: must be >= 1, got {self.roundtrip_batch_seqs}")
        if not self.eval_budget_seconds >= 0:
            raise ValueError(f"eval_budget_seconds: must be >= 0 (0 = no budget), got {self.eval_budget_seconds}")
        names = [m.name for m in self.mixers]
        if self.ngram and (not names or len(set(names)) != len(names)):
            raise ValueError(f"mixers: need at least one setting with unique names, got {names}")
        ttt_names = [t.name for t in self.ttt_runs]
        if len(set(ttt_names)) != len(ttt_names):
            raise ValueError(f"ttt_sweep: names must be unique, got {ttt_names}")

    @property
    def strategies(self) -> list[str]:
        """The strategy names to run, in order."""
        return [s.strip() for s in self.strategy.split(",") if s.strip()]

    @property
    def ttt_runs(self) -> list[TTTConfig]:
        """The TTT settings to run."""
        return list(self.ttt_sweep) or [self.ttt]

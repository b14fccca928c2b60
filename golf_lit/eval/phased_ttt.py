"""Phased score-first TTT: per-document LoRA scoring with global SGD phases (docs/top-stack.md §6.2-6.4).

Lineage: batched per-document LoRA TTT (record 2026-04-10 VarLen, PR #1530), global-SGD pause (2026-04-13
Phasing), 3 phases (2026-04-14 Phases), alpha 144 + warm-start A (PR #1767), TOP settings (PR #1855).

Procedure (every step keeps the score-first rule by construction, and runtime guards check it):

1. Documents are the BOS-delimited spans of the stream; a document's targets run from its BOS up to and
   including the next document's BOS, so every target is in exactly one document.
2. Documents are sorted longest first. The first ``prefix_docs`` of that order are cut at the phase boundaries
   ``prefix_docs * k // num_phases`` (k = 1..num_phases) into segments; the rest is the suffix segment. Each
   segment is cut into batches of ``batch_size`` documents and batch g goes to rank ``g % world_size``. So which
   documents a phase trains on is fixed by the data alone (the record's ranks race for batches through a file
   counter in /tmp and overshoot the boundary, §6.4(b)); there are no files, only collectives.
3. A batch gets a fresh set of LoRA adapters, one per document along a batch axis, on the model's own modules
   (forward hooks): Q, K, V on ``attn.c_q/c_k/c_v``; "O" reads the attention module's input and adds to its
   output; "MLP" reads the MLP input and adds to its output; "head" reads the final normalized hidden state and
   adds to the logits. The TTT forward therefore IS the model's forward plus these terms: every model option
   acts identically, and with B = 0 the logits are the model's (tested). Output scale alpha / rank;
   A ~ U(+-1/sqrt(in)), B = 0. With ``warm_start_a`` only B is zeroed between batches (and Adam reset).
4. Chunk c of every document of the batch (``chunk_size`` targets, scored with the last <= ``eval_seq_len``
   tokens ending at the chunk's end as context) is scored and ADDED TO THE SUMS first; then, unless it is the
   document's last chunk, one AdamW step per ``grad_steps`` on that document's mean chunk NLL.
5. After segment k (k < num_phases) every rank has scored the first boundary_k documents; the base model (all
   parameters) then takes one epoch of SGD over them (cumulative: phase 2 re-trains phase-1 documents), in
   chunks of ``global_chunk_tokens`` targets split across ranks, cosine lr, last chunk skipped, gradients summed
   across ranks and normalized by the chunk's global target count, clip ``global_grad_clip``, document-masked
   (``cu_seqlens`` when the model's forward takes it, else one row per document piece). Adapters are rebuilt.

Differences from the record (docs/evaluation.md, "Phased score-first TTT"): head LoRA is added after the model's logit
softcap (the model exposes no pre-softcap hook; identical at B = 0); adapters are per physical module, so a looped
layer shares its adapter across its repeats (the record has one per virtual layer); phase membership is
deterministic.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf_lit.eval.invariants import InvariantError
from golf_lit.eval.scorer import MODEL, Recorder
from golf_lit.eval.sums import ScoreSums
from golf_lit.ranks import rank_range

PAD_ID = 0
IGNORE = -100
TARGETS = ("q", "k", "v", "o", "mlp", "head")


@dataclass(kw_only=True)
class PhasedTTTConfig:
    """Phased TTT settings; defaults are TOP's logged values (docs/top-stack.md §8, env names in brackets)."""

    name: str = "phased_ttt"
    """Name of this setting in the report."""
    prefix_docs: int = 2500
    """Documents (longest first) covered by the global phases [PHASED_TTT_PREFIX_DOCS]."""
    num_phases: int = 3
    """Global SGD phases; boundaries prefix_docs * k // num_phases [PHASED_TTT_NUM_PHASES]; 0 = LoRA only."""
    lora_rank: int = 80
    """LoRA rank [TTT_LORA_RANK]."""
    lora_alpha: float = 144.0
    """LoRA output scale alpha / rank [TTT_LORA_ALPHA]."""
    lora_targets: tuple[str, ...] = TARGETS
    """Which projections get adapters: q, k, v, o, mlp, head [TTT_K_LORA, TTT_O_LORA, TTT_MLP_LORA = 1]."""
    warm_start_a: bool = True
    """Keep A between batches, zero only B [TTT_WARM_START_A]."""
    lora_lr: float = 1e-4
    """AdamW lr [TTT_LORA_LR]."""
    beta1: float = 0.0
    """AdamW beta1 [TTT_BETA1]."""
    beta2: float = 0.99
    """AdamW beta2 [TTT_BETA2]."""
    eps: float = 1e-10
    """AdamW eps."""
    weight_decay: float = 0.5
    """AdamW weight decay [TTT_WEIGHT_DECAY]."""
    grad_steps: int = 1
    """AdamW steps per scored chunk [TTT_GRAD_STEPS]."""
    chunk_size: int = 48
    """Targets per scored chunk [TTT_CHUNK_SIZE]."""
    eval_seq_len: int = 2048
    """Context window of a chunk's forward [TTT_EVAL_SEQ_LEN]."""
    batch_size: int = 64
    """Documents per batch [TTT_BATCH_SIZE]."""
    global_lr: float = 1e-3
    """Global SGD peak lr, cosine-decayed over a phase's chunks [GLOBAL_TTT_LR]."""
    global_momentum: float = 0.9
    """Global SGD momentum; a fresh optimizer per phase [GLOBAL_TTT_MOMENTUM]."""
    global_epochs: int = 1
    """Passes over the phase's documents [GLOBAL_TTT_EPOCHS]."""
    global_chunk_tokens: int = 32768
    """Targets per global SGD step, all ranks together [GLOBAL_TTT_CHUNK_TOKENS]."""
    global_seq_len: int = 2048
    """Longest document piece of a global step (documents are cut into pieces this long)."""
    global_grad_clip: float = 1.0
    """Global gradient norm clip, 0 = off [GLOBAL_TTT_GRAD_CLIP]."""
    seed: int = 0
    """Seed of the adapters' A initialisation (per batch index, so it does not depend on the rank)."""
    bos_id: int = 1
    """Token that starts a document."""

    def __post_init__(self) -> None:
        def bad(key: str, msg: str) -> ValueError:
            return ValueError(f"phased_ttt.{key}: {msg}")

        for key in ("lora_rank", "chunk_size", "eval_seq_len", "batch_size", "global_chunk_tokens",
                    "global_seq_len"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("prefix_docs", "num_phases", "grad_steps", "global_epochs"):
            if getattr(self, key) < 0:
                raise bad(key, f"must be >= 0, got {getattr(self, key)}")
        if self.eval_seq_len < self.chunk_size:
            raise bad("eval_seq_len", f"must be >= chunk_size ({self.chunk_size}), got {self.eval_seq_len}")
        unknown = set(self.lora_targets) - set(TARGETS)
        if unknown:
            raise bad("lora_targets", f"unknown {sorted(unknown)}; choose from {TARGETS}")
        if not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1 or not 0 <= self.global_momentum < 1:
            raise bad("beta1", "beta1, beta2 and global_momentum must be in [0, 1)")

    def boundaries(self, num_docs: int) -> list[int]:
        """Documents scored before each global phase (cumulative, clipped to ``num_docs``)."""
        if self.num_phases == 0:
            return []
        return [min(self.prefix_docs * k // self.num_phases, num_docs) for k in range(1, self.num_phases + 1)]


def _identity(t: Tensor) -> Tensor:
    return t


@dataclass
class Collectives:
    """What phased TTT needs from the process group: rank, world size and a sum all-reduce (returns the sum)."""

    rank: int = 0
    world_size: int = 1
    all_reduce: Callable[[Tensor], Tensor] = _identity

    @classmethod
    def from_torch_distributed(cls) -> Collectives:
        """Collectives of the default ``torch.distributed`` group (one rank if it is not initialised)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return cls()

        def all_reduce(t: Tensor) -> Tensor:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            return t

        return cls(dist.get_rank(), dist.get_world_size(), all_reduce)


def split_documents(tokens: Tensor, bos_id: int) -> tuple[Tensor, Tensor]:
    """Documents of a stream as target ranges: ``(starts, lengths)`` (int64).

    Document i's targets are positions ``starts[i] .. starts[i] + lengths[i] - 1`` (position j predicts
    ``tokens[j + 1]``): from its BOS up to and including the next BOS as the final target. A stream that does
    not begin with BOS gets a first document starting at 0.
    """
    n = tokens.numel() - 1
    starts = torch.nonzero(tokens[:n] == bos_id).flatten().cpu()
    if starts.numel() == 0 or int(starts[0]) != 0:
        starts = torch.cat([torch.zeros(1, dtype=torch.int64), starts])
    ends = torch.cat([starts[1:], torch.tensor([n])])
    return starts, ends - starts


class BatchedLoRA(nn.Module):
    """One LoRA per document along a batch axis: ``x (R, T, in) -> scale * x A[:R]^T B[:R]^T``."""

    def __init__(self, batch: int, in_features: int, out_features: int, rank: int, scale: float) -> None:
        super().__init__()
        self.in_features, self.scale = in_features, scale
        self.A = nn.Parameter(torch.empty(batch, rank, in_features))
        self.B = nn.Parameter(torch.zeros(batch, out_features, rank))

    def reset(self, generator: torch.Generator | None, keep_a: bool) -> None:
        """B = 0; A ~ U(+-1/sqrt(in)) unless ``keep_a``."""
        with torch.no_grad():
            self.B.zero_()
            if not keep_a:
                bound = 1.0 / math.sqrt(self.in_features)
                a = torch.rand(self.A.shape, generator=generator) * (2 * bound) - bound
                self.A.copy_(a.to(self.A.device))

    def forward(self, x: Tensor) -> Tensor:
        r = x.size(0)
        h = torch.bmm(x.reshape(r, -1, x.size(-1)), self.A[:r].transpose(1, 2).to(x.dtype))
        out = torch.bmm(h, self.B[:r].transpose(1, 2).to(x.dtype)) * self.scale
        return out.reshape(*x.shape[:-1], out.size(-1))


def _first_input(args: tuple, kwargs: dict) -> Tensor:
    return args[0] if args else next(iter(kwargs.values()))


class LoRAHooks:
    """Per-document LoRA adapters attached to a model's own modules through forward hooks.

    Args:
        model: The model (its modules are found by name: ``*.attn.c_q/c_k/c_v``, ``*.attn``, ``*.mlp``).
        cfg: Rank, alpha and targets.
        batch: Documents per batch (adapter batch axis).
    """

    def __init__(self, model: nn.Module, cfg: PhasedTTTConfig, batch: int) -> None:
        self.scale = cfg.lora_alpha / cfg.lora_rank
        self.adapters = nn.ModuleDict()
        self.handles: list = []
        self._final: Tensor | None = None
        targets = set(cfg.lora_targets)
        device = next(model.parameters()).device
        for name, module in model.named_modules():
            parts = name.split(".")
            key = name.replace(".", "_")
            if len(parts) >= 2 and parts[-2] == "attn" and parts[-1] in ("c_q", "c_k", "c_v") \
                    and parts[-1][-1] in targets and isinstance(module, nn.Linear):
                self._add(key, module, module.in_features, module.out_features, batch, cfg, "linear")
            elif parts[-1] == "attn" and "o" in targets and hasattr(module, "proj"):
                self._add(key, module, module.proj.in_features, module.proj.out_features, batch, cfg, "pair")
            elif parts[-1] == "mlp" and "mlp" in targets and hasattr(module, "fc"):
                self._add(key, module, module.fc.in_features, module.proj.out_features, batch, cfg, "linear")
        if "head" in targets:
            blocks = getattr(model, "blocks", None)
            vocab = model.cfg.vocab_size if hasattr(model, "cfg") else None
            if blocks is None or vocab is None:
                raise ValueError("phased_ttt.lora_targets: 'head' needs a model with .blocks and .cfg.vocab_size")
            dim = model.cfg.model_dim
            self.adapters["head"] = BatchedLoRA(batch, dim, vocab, cfg.lora_rank, self.scale)
            self.handles.append(blocks[-1].register_forward_hook(self._capture_final))
            self.handles.append(model.register_forward_hook(self._add_head))
        if not len(self.adapters):
            raise ValueError(f"phased_ttt.lora_targets: no module of the model matches {sorted(targets)}")
        self.adapters.to(device)

    def _add(self, key: str, module: nn.Module, fin: int, fout: int, batch: int, cfg: PhasedTTTConfig,
             kind: str) -> None:
        lora = BatchedLoRA(batch, fin, fout, cfg.lora_rank, self.scale)
        self.adapters[key] = lora

        def hook(mod, args, kwargs, out):
            delta = lora(_first_input(args, kwargs))
            if kind == "pair":  # attention returns (out, raw_v)
                return (out[0] + delta.to(out[0].dtype), *out[1:])
            return out + delta.to(out.dtype)

        self.handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def _capture_final(self, mod, args, out) -> None:
        self._final = out[0] if isinstance(out, tuple) else out

    def _add_head(self, mod, args, out: Tensor) -> Tensor:
        h = F.rms_norm(self._final, (self._final.size(-1),))
        self._final = None
        return out + self.adapters["head"](h).to(out.dtype)

    def reset(self, batch_index: int, seed: int, keep_a: bool) -> None:
        """Fresh adapters for a batch (A drawn from a generator seeded by the batch index)."""
        gen = torch.Generator().manual_seed(seed * 1_000_003 + batch_index)
        for lora in self.adapters.values():
            lora.reset(gen, keep_a)

    def parameters(self) -> list[nn.Parameter]:
        """The adapters' parameters."""
        return list(self.adapters.parameters())

    def remove(self) -> None:
        """Detach every hook (the model is then exactly the plain model again)."""
        for h in self.handles:
            h.remove()
        self.handles = []


# Runtime guards (module-level so the invariant tests can switch them off to show the checker still catches).
def require_unscored(scored: Tensor, positions: Tensor, what: str) -> None:
    """Invariant 4: none of ``positions`` was scored before."""
    if bool(scored[positions].any()):
        first = int(positions[scored[positions]][0])
        raise InvariantError(f"invariant 4 (score each token once): {what} re-scores position {first}")


def require_all_scored(scored: Tensor, positions: Tensor, what: str) -> None:
    """Invariant 3: every one of ``positions`` was scored before this update uses it."""
    if not bool(scored[positions].all()):
        first = int(positions[~scored[positions]][0])
        raise InvariantError(f"invariant 3 (score before update): {what} would train on unscored index {first}")


def require_not_last_chunk(is_last: bool, what: str) -> None:
    """Score-first for the final chunk: a document's last chunk is never trained on."""
    if is_last:
        raise InvariantError(f"invariant 3 (score before update): {what} would train on a document's last chunk")


@dataclass
class PhaseTrace:
    """What a phased TTT run scored and trained on, in order (for the invariant tests)."""

    events: list[tuple[str, int, Tensor]] = field(default_factory=list)
    """``(kind, doc, positions)`` with kind "score", "lora" (doc = document index) or "global" (doc = phase)."""

    def __call__(self, kind: str, doc: int, positions: Tensor) -> None:
        self.events.append((kind, doc, positions.detach().cpu().clone()))

    def check(self, num_targets: int, starts: Tensor, lengths: Tensor, chunk_size: int) -> list[str]:
        """Every violation of the score-first rules; empty when the run was honest.

        Checks: each position scored exactly once; every trained position scored before; no document's last
        chunk trained on by its LoRA; every document a global phase touches fully scored before the phase.
        """
        problems: list[str] = []
        scored = torch.zeros(num_targets, dtype=torch.int64)
        doc_of = torch.repeat_interleave(torch.arange(len(starts)), lengths)
        for kind, doc, pos in self.events:
            if kind == "score":
                scored[pos] += 1
                continue
            if not bool((scored[pos] > 0).all()):
                problems.append(f"{kind} step (doc/phase {doc}) trained on {int((scored[pos] == 0).sum())} "
                                "positions before they were scored")
            if kind == "lora":
                last0 = int(starts[doc]) + (int(lengths[doc]) - 1) // chunk_size * chunk_size
                if bool((pos >= last0).any()):
                    problems.append(f"lora step trained on the last chunk of document {doc}")
            else:
                docs = torch.unique(doc_of[pos])
                for d in docs.tolist():
                    a, n = int(starts[d]), int(lengths[d])
                    if not bool((scored[a : a + n] > 0).all()):
                        problems.append(f"global phase {doc} trained on document {d} before it was fully scored")
        if bool((scored > 1).any()):
            problems.append(f"{int((scored > 1).sum())} positions scored more than once")
        if bool((scored == 0).any()):
            problems.append(f"{int((scored == 0).sum())} positions never scored")
        return problems


class ChunkBatch(NamedTuple):
    """Chunk ``c`` of a batch's active documents: inputs (rows, window), the chunk's columns in the window, its
    targets (IGNORE past a document's end), global target positions and mask (host tensors)."""

    c: int
    docs: Tensor
    nchunks: Tensor
    x: Tensor
    cols: Tensor
    y: Tensor
    pos: Tensor
    mask: Tensor


class PhasedTTT:
    """One phased TTT run over a token stream; :meth:`run` is the whole protocol, returning this rank's sums.

    Args:
        model: The artifact model (a deep copy is adapted; the argument is never modified).
        tokens: 1-D token stream (N + 1 tokens; position j predicts ``tokens[j + 1]``).
        byte_counts: Original bytes of every target (N,), e.g. ``golf_lit.data.byte_source.target_bytes``.
        cfg: Settings.
        collectives: Rank, world size and the sum all-reduce.
        autocast: Context manager factory for forwards.
        record: Optional ScoreRecorder-style recorder of every scored position (variant ``"model"``).
        trace: Optional :class:`PhaseTrace`.
    """

    def __init__(
        self,
        model: nn.Module,
        tokens: Tensor,
        byte_counts: Tensor,
        cfg: PhasedTTTConfig,
        collectives: Collectives | None = None,
        autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
        record: Recorder | None = None,
        trace: Callable[[str, int, Tensor], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.coll = collectives or Collectives()
        self.model = copy.deepcopy(model)
        self.device = next(self.model.parameters()).device
        self.tokens = tokens.to(self.device, torch.int64)
        self.num_targets = self.tokens.numel() - 1
        if byte_counts.numel() != self.num_targets:
            raise ValueError(f"byte_counts: {byte_counts.numel()} counts for {self.num_targets} targets")
        self.byte_counts = byte_counts.to(self.device, torch.float64)
        self.autocast, self.record, self.trace = autocast, record, trace
        self.starts, self.lengths = split_documents(self.tokens.cpu(), cfg.bos_id)
        self.order = torch.sort(self.lengths, descending=True, stable=True).indices  # longest first
        self.tokens_host = self.tokens.cpu()
        self.scored = torch.zeros(self.num_targets, dtype=torch.bool)  # host-side bookkeeping of scored targets
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        self.timings: list[tuple[str, float]] = []
        self.accepts_cu_seqlens = "cu_seqlens" in inspect.signature(self.model.forward).parameters

    # -- schedule -------------------------------------------------------------------------------------------

    def segments(self) -> list[tuple[int, int]]:
        """Ranges of the longest-first document order scored between global phases (the last is the suffix)."""
        d = len(self.order)
        cuts = [0, *self.cfg.boundaries(d), d]
        return [(a, b) for a, b in zip(cuts[:-1], cuts[1:])]

    def phase_docs(self, k: int) -> Tensor:
        """Document indices global phase ``k`` trains on: the first boundary_k of the longest-first order."""
        return self.order[: self.cfg.boundaries(len(self.order))[k]]

    def run(self) -> dict[str, ScoreSums]:
        """Score every segment, with a global phase after each of the first ``num_phases``; this rank's sums."""
        batch_index = 0
        segments = self.segments()
        for k, (a, b) in enumerate(segments):
            t0 = time.perf_counter()
            self.model.requires_grad_(False)
            hooks = LoRAHooks(self.model, self.cfg, self.cfg.batch_size)  # rebuilt after every phase
            first = True
            for s in range(a, b, self.cfg.batch_size):
                if batch_index % self.coll.world_size == self.coll.rank:
                    docs = self.order[s : min(s + self.cfg.batch_size, b)]
                    hooks.reset(batch_index, self.cfg.seed, keep_a=self.cfg.warm_start_a and not first)
                    first = False
                    self.score_batch(docs, hooks)
                batch_index += 1
            hooks.remove()
            label = "suffix" if k == len(segments) - 1 else str(k + 1)
            self.timings.append((f"score_{label}", time.perf_counter() - t0))
            if k < len(segments) - 1:
                t0 = time.perf_counter()
                self.global_phase(k)
                self.timings.append((f"sgd_{k + 1}", time.perf_counter() - t0))
        return {MODEL: ScoreSums(*self.sums.tolist())}

    # -- part 1: per-document LoRA scoring --------------------------------------------------------------------

    def trains_on(self, chunk: int, num_chunks: int) -> bool:
        """Whether a document's chunk is trained on after scoring: all but its last chunk."""
        return chunk < num_chunks - 1

    def score_batch(self, docs: Tensor, hooks: LoRAHooks) -> None:
        """Score (and adapt on) one batch of documents, chunk by chunk; rows are longest first."""
        cfg = self.cfg
        params = hooks.parameters()
        opt = torch.optim.AdamW(params, lr=cfg.lora_lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                weight_decay=cfg.weight_decay)
        starts, lengths = self.starts[docs], self.lengths[docs]
        nchunks = (lengths + cfg.chunk_size - 1) // cfg.chunk_size
        self.model.eval()
        for c in range(int(nchunks.max())):
            rows = int((nchunks > c).sum())  # docs are sorted longest first: the active ones are a prefix
            self.process_chunk(self.chunk_batch(c, docs[:rows], starts[:rows], lengths[:rows], nchunks[:rows]), opt)

    def chunk_batch(self, c: int, docs: Tensor, starts: Tensor, lengths: Tensor, nchunks: Tensor) -> ChunkBatch:
        """Chunk ``c`` of each document: its window of inputs and where the chunk's targets sit in it."""
        cfg = self.cfg
        a = torch.full_like(lengths, c * cfg.chunk_size)
        b = torch.minimum(a + cfg.chunk_size, lengths)
        w0 = (b - cfg.eval_seq_len).clamp(min=0)
        width = int((b - w0).max())
        local = w0[:, None] + torch.arange(width)[None, :]  # local input index of each column
        x = torch.where(local < b[:, None], self.tokens_host[(starts[:, None] + local).clamp(max=self.num_targets)],
                        PAD_ID)
        j = torch.arange(cfg.chunk_size)[None, :]
        mask = j < (b - a)[:, None]
        cols = ((a - w0)[:, None] + j).clamp(max=width - 1)  # the chunk is the window's last b - a columns
        pos = ((starts + a)[:, None] + j).clamp(max=self.num_targets - 1)  # global target positions
        y = torch.where(mask, self.tokens_host[pos + 1], IGNORE)
        dev = self.device
        return ChunkBatch(c, docs, nchunks, x.to(dev), cols.to(dev), y.to(dev), pos, mask)

    def process_chunk(self, batch: ChunkBatch, opt: torch.optim.Optimizer) -> None:
        """Score chunk ``c`` of each active document and add it to the sums, then train on it (not the last)."""
        nll = self.forward_nll(batch, score=True)
        self.lora_step(batch, nll, opt)

    def forward_nll(self, batch: ChunkBatch, score: bool) -> Tensor:
        """NLL (rows, chunk_size) of the chunk's targets under the hooked model (0 outside the chunk); with
        ``score`` the chunk's positions are added to the sums."""
        with torch.enable_grad(), self.autocast():
            logits = self.model(batch.x)
        v = logits.size(-1)
        sel = logits.gather(1, batch.cols[..., None].expand(-1, -1, v))  # only the chunk's columns
        logp = torch.log_softmax(sel.float(), dim=-1)
        mask = batch.mask.to(self.device)
        nll = -logp.gather(-1, batch.y.clamp(min=0)[..., None])[..., 0] * mask
        if score:
            with torch.no_grad():
                self.add_scores(batch.pos[batch.mask], nll[mask].detach(), batch.y[mask],
                                logp[mask].detach() if self.record is not None else None)
        return nll

    def add_scores(self, positions: Tensor, nll: Tensor, targets: Tensor, logp: Tensor | None = None) -> None:
        """Add scored positions (CPU int64) to the sums, each position once (guarded)."""
        require_unscored(self.scored, positions, "phased TTT scoring")
        self.scored[positions] = True
        self.sums[0] += nll.to(torch.float64).sum()
        self.sums[1] += float(positions.numel())
        self.sums[2] += self.byte_counts[positions.to(self.device)].sum()
        if self.trace is not None:
            self.trace("score", -1, positions)
        if self.record is not None:
            self.record(MODEL, positions, torch.exp(-nll), logp.exp(), targets, 0)

    def lora_step(self, batch: ChunkBatch, nll: Tensor, opt: torch.optim.Optimizer) -> None:
        """``grad_steps`` AdamW steps on each document's mean chunk NLL, for documents with a later chunk."""
        c, nchunks = batch.c, batch.nchunks
        train = torch.tensor([self.trains_on(c, int(n)) for n in nchunks], dtype=torch.bool)
        if self.cfg.grad_steps == 0 or not bool(train.any()):
            return
        require_not_last_chunk(bool((c >= nchunks[train] - 1).any()), f"LoRA step on chunk {c}")
        require_all_scored(self.scored, batch.pos[train][batch.mask[train]], f"LoRA step on chunk {c}")
        if self.trace is not None:
            for i in torch.nonzero(train).flatten().tolist():
                self.trace("lora", int(batch.docs[i]), batch.pos[i][batch.mask[i]])
        counts = batch.mask.sum(dim=1).clamp(min=1).to(torch.float32)
        weights = (train.to(torch.float32) / counts).to(self.device)
        for step in range(self.cfg.grad_steps):
            if step:
                nll = self.forward_nll(batch, score=False)
            loss = (nll.sum(dim=1) * weights).sum()  # per-document means; adapters are per document
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    # -- part 2: global SGD on fully scored documents ---------------------------------------------------------

    def global_phase(self, k: int) -> None:
        """One global SGD phase on the documents of :meth:`phase_docs` (all ranks together)."""
        cfg = self.cfg
        docs = self.phase_docs(k)
        # Documents fully scored by some rank (each document is scored by one rank), gathered by a sum.
        cs = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(self.scored.to(torch.int64), 0)])
        full = (cs[self.starts + self.lengths] - cs[self.starts]) == self.lengths
        done = self.coll.all_reduce(full.to(self.device, torch.float32)).cpu() > 0
        require_all_scored(done, docs, f"global phase {k + 1} (documents)")
        # Concatenated targets of the phase's documents, in the longest-first order, as (position) pieces.
        spans = torch.stack([self.starts[docs], self.starts[docs] + self.lengths[docs]], dim=1)
        total = int(self.lengths[docs].sum())
        num_chunks = -(-total // cfg.global_chunk_tokens)
        params = [p for p in self.model.parameters()]
        self.model.requires_grad_(True)
        opt = torch.optim.SGD(params, lr=cfg.global_lr, momentum=cfg.global_momentum)
        self.model.train()
        for _ in range(cfg.global_epochs):
            for c in range(num_chunks - 1):  # the record skips the phase's last chunk
                lr = cfg.global_lr * 0.5 * (1 + math.cos(math.pi * c / max(num_chunks - 1, 1)))
                for group in opt.param_groups:
                    group["lr"] = lr
                pieces = _pieces(spans, c * cfg.global_chunk_tokens,
                                 min((c + 1) * cfg.global_chunk_tokens, total), cfg.global_seq_len)
                r0, r1 = rank_range(len(pieces), self.coll.rank, self.coll.world_size)
                mine = pieces[r0:r1]
                count = sum(b - a for a, b in pieces)
                if self.trace is not None and mine:
                    self.trace("global", k + 1, torch.cat([torch.arange(a, b) for a, b in mine]))
                self._global_step(mine, count, params, opt)
        self.model.requires_grad_(False)
        self.model.eval()

    def _global_step(self, pieces: list[tuple[int, int]], count: int, params: list[nn.Parameter],
                     opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=False)
        if pieces:
            loss = self._pieces_loss(pieces) / count
            loss.backward()
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.coll.world_size > 1:
            flat = self.coll.all_reduce(torch.cat([p.grad.reshape(-1) for p in params]))
            offset = 0
            for p in params:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        if self.cfg.global_grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.global_grad_clip)
        opt.step()

    def _pieces_loss(self, pieces: list[tuple[int, int]]) -> Tensor:
        """Summed NLL of document pieces (each attends only within itself)."""
        tok = self.tokens
        if self.accepts_cu_seqlens:  # one packed row, document-masked by the model (docs/top-stack.md §2.5)
            x = torch.cat([tok[a:b] for a, b in pieces])[None]
            y = torch.cat([tok[a + 1 : b + 1] for a, b in pieces])[None]
            lens = torch.tensor([0] + [b - a for a, b in pieces])
            cu = torch.cumsum(lens, 0).to(device=self.device, dtype=torch.int32)
            with self.autocast():
                logits = self.model(x, cu_seqlens=cu)
        else:  # one row per piece, right-padded (causal attention never sees the padding)
            width = max(b - a for a, b in pieces)
            x = torch.full((len(pieces), width), PAD_ID, dtype=torch.int64, device=self.device)
            y = torch.full((len(pieces), width), IGNORE, dtype=torch.int64, device=self.device)
            for i, (a, b) in enumerate(pieces):
                x[i, : b - a], y[i, : b - a] = tok[a:b], tok[a + 1 : b + 1]
            with self.autocast():
                logits = self.model(x)
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE,
                               reduction="sum")


def _pieces(spans: Tensor, lo: int, hi: int, max_len: int) -> list[tuple[int, int]]:
    """Position ranges covering concatenated-target offsets ``[lo, hi)`` of ``spans``, cut at document ends and
    every ``max_len`` targets."""
    out: list[tuple[int, int]] = []
    offset = 0
    for a, b in spans.tolist():
        n = b - a
        s, e = max(lo - offset, 0), min(hi - offset, n)
        for p in range(s, e, max_len):
            out.append((a + p, a + min(p + max_len, e)))
        offset += n
        if offset >= hi:
            break
    return out


def score_phased_ttt(
    model: nn.Module,
    tokens: Tensor,
    byte_counts: Tensor,
    cfg: PhasedTTTConfig,
    collectives: Collectives | None = None,
    *,
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    record: Recorder | None = None,
    trace: Callable[[str, int, Tensor], None] | None = None,
    timings: list[tuple[str, float]] | None = None,
) -> dict[str, ScoreSums]:
    """Phased score-first TTT (see the module docstring); ``model`` is left untouched.

    Args:
        model: The loaded artifact model (on the device it should run on).
        tokens: 1-D token stream (N + 1 tokens).
        byte_counts: Original bytes of each of the N targets (``golf_lit.data.byte_source.target_bytes``).
        cfg: Settings.
        collectives: Rank, world size and a sum all-reduce (default: a single process).
        autocast: Context manager factory for forwards.
        record: Optional ScoreRecorder for the invariant checks.
        trace: Optional :class:`PhaseTrace`.
        timings: If given, receives ``(part, seconds)`` per scoring segment and global phase, in order.

    Returns:
        This rank's float64 sums under ``"model"`` (add across ranks, as for ``score_ttt``).
    """
    coll = collectives or Collectives()
    if coll.world_size > 1 and coll.all_reduce is _identity:
        raise ValueError("phased TTT on several ranks needs an all_reduce that sums across them")
    runner = PhasedTTT(model, tokens, byte_counts, cfg, coll, autocast, record, trace)
    sums = runner.run()
    if timings is not None:
        timings.extend(runner.timings)
    return sums

"""The engine of phased score-first TTT (``--strategy phased_ttt``, golf_lit/eval/strategies/phased_ttt.py):
per-document LoRA scoring with global SGD phases (docs/top-stack.md §6.2-6.4).

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
   (forward hooks, golf_lit/eval/strategies/lora.py); "head" reads the model's final normalized hidden state
   through its declared hook point (``GPT.head_tap``) and adds to the logits before the softcap. The TTT
   forward therefore IS the model's forward plus these terms: every model option acts identically, and with
   B = 0 the logits are the model's (tested on the record model, the top model and each top option). Output
   scale alpha / rank; A ~ U(+-1/sqrt(in)), B = 0. With ``warm_start_a`` only B is zeroed between batches (and
   Adam reset); the first batch of every segment draws A afresh (adapters rebuilt after each phase).
4. Chunk c of every document of the batch (``chunk_size`` targets, scored with the last <= ``eval_seq_len``
   tokens ending at the chunk's end as context) is scored and ADDED TO THE SUMS first; then, unless it is the
   document's last chunk, one AdamW step per ``grad_steps`` on that document's mean chunk NLL.
5. After segment k (k < num_phases) every rank has scored the first boundary_k documents; the base model (all
   parameters) then takes one epoch of SGD over them (cumulative: phase 2 re-trains phase-1 documents), in
   chunks of ``global_chunk_tokens`` targets split across ranks, cosine lr, last chunk skipped, gradients summed
   across ranks and normalized by the chunk's global target count, clip ``global_grad_clip``, document-masked
   (``cu_seqlens`` when the model's forward takes it, else one row per document piece). Adapters are rebuilt.

With ``compile`` the scoring/LoRA forward (the hooked model) is ``torch.compile``d with dynamic shapes, as the
record does; the compiled function lives in a :class:`Workspace` that the strategy keeps across runs, so the
evaluator's warm-up on random tokens compiles exactly the function the timed run calls. The global SGD
forward runs eagerly.

Differences from the record (docs/evaluation.md, "Phased score-first TTT"): adapters are per physical module,
so a looped layer shares its adapter across its repeats (the record has one per virtual layer); phase
membership is deterministic.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf_lit.data.byte_source import target_bytes
from golf_lit.eval import invariants
from golf_lit.eval.scorer import MODEL
from golf_lit.eval.strategies.base import IGNORE, PAD_ID, EvalContext, single_rank_sum
from golf_lit.eval.strategies.lora import LoRAHooks
from golf_lit.eval.sums import ScoreSums
from golf_lit.ranks import rank_range

if TYPE_CHECKING:
    from golf_lit.eval.strategies.phased_ttt import PhasedTTTConfig


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


def compile_forward(model: nn.Module) -> nn.Module:
    """The compiled scoring/LoRA forward: ``torch.compile`` with dynamic shapes (rows and window width vary)."""
    return torch.compile(model, dynamic=True)


class Workspace:
    """The adapted copy of the artifact model, its LoRA hooks and its (compiled) forward, kept across runs.

    Args:
        source: The artifact model (deep-copied once; never modified).
        cfg: Settings (adapter rank, alpha, targets, batch size; ``compile``).
    """

    def __init__(self, source: nn.Module, cfg: PhasedTTTConfig) -> None:
        self.source = source
        self.model = copy.deepcopy(source)
        self.hooks = LoRAHooks(self.model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.batch_size)
        self.forward = compile_forward(self.model) if cfg.compile else self.model
        self.accepts_cu_seqlens = "cu_seqlens" in inspect.signature(self.model.forward).parameters

    @torch.no_grad()
    def restore(self) -> None:
        """Back to the artifact's weights (a previous run's global phases changed the copy)."""
        self.model.load_state_dict(self.source.state_dict())


class PhasedRun:
    """One phased TTT run over the stream of ``ctx``; :meth:`run` is the whole protocol, returning this rank's sums.

    Args:
        cfg: Settings.
        ctx: The stream, byte source, rank, world size, sum all-reduce, autocast, recorder and trace.
        work: The adapted model and its hooks (default: a fresh :class:`Workspace` of ``ctx.model``); restored
            to the artifact's weights first.
    """

    def __init__(self, cfg: PhasedTTTConfig, ctx: EvalContext, work: Workspace | None = None) -> None:
        if ctx.world_size > 1 and ctx.all_reduce is single_rank_sum:
            raise ValueError("phased TTT on several ranks needs an all_reduce that sums across them")
        self.cfg = cfg
        self.ctx = ctx
        self.work = work or Workspace(ctx.model, cfg)
        self.work.restore()
        self.model, self.hooks, self.forward = self.work.model, self.work.hooks, self.work.forward
        self.accepts_cu_seqlens = self.work.accepts_cu_seqlens
        self.device = ctx.device
        self.tokens = ctx.tokens.to(self.device, torch.int64)
        self.num_targets = self.tokens.numel() - 1
        self.byte_counts = target_bytes(ctx.luts, self.tokens).to(torch.float64)
        self.autocast, self.record, self.trace = ctx.autocast, ctx.record, ctx.trace
        self.tokens_host = ctx.tokens.cpu().to(torch.int64)  # the stream is on the CPU by EvalContext's contract
        self.starts, self.lengths = split_documents(self.tokens_host, cfg.bos_id)
        self.order = torch.sort(self.lengths, descending=True, stable=True).indices  # longest first
        self.scored = torch.zeros(self.num_targets, dtype=torch.bool)  # host-side bookkeeping of scored targets
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        self.timings: list[tuple[str, float]] = []

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
            self.hooks.active = True
            first = True  # the adapters are rebuilt (A drawn afresh) at the first batch after every phase
            for s in range(a, b, self.cfg.batch_size):
                if batch_index % self.ctx.world_size == self.ctx.rank:
                    docs = self.order[s : min(s + self.cfg.batch_size, b)]
                    self.hooks.reset(batch_index, self.cfg.seed, keep_a=self.cfg.warm_start_a and not first)
                    first = False
                    self.score_batch(docs, self.hooks)
                batch_index += 1
            self.hooks.active = False
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
            logits = self.forward(batch.x)
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
        invariants.require_unscored(self.scored, positions, "phased TTT scoring")
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
        invariants.require_not_last_chunk(bool((c >= nchunks[train] - 1).any()), f"LoRA step on chunk {c}")
        invariants.require_all_scored(self.scored, batch.pos[train][batch.mask[train]], f"LoRA step on chunk {c}")
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
        done = self.ctx.all_reduce(full.to(self.device, torch.float32)).cpu() > 0
        invariants.require_all_scored(done, docs, f"global phase {k + 1} (documents)")
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
                r0, r1 = rank_range(len(pieces), self.ctx.rank, self.ctx.world_size)
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
        if self.ctx.world_size > 1:
            flat = self.ctx.all_reduce(torch.cat([p.grad.reshape(-1) for p in params]))
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



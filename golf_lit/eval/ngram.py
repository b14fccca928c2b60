"""Exact n-gram counts over already-scored tokens, and the mixer that turns them into a normalized distribution.

The seed's n-gram cache (docs/record-stack.md §12; PR #727 / #761, backoff idea PR #702, entropy-adaptive alpha PR
#702/#727)
read a "probability" for the realized token out of hashed buckets keyed by context *and target*, which is not a
distribution (docs/record-stack.md §12.5). Here counts are kept exactly per (context, continuation token):

* A context of ``w = order - 1`` tokens is packed exactly into a 63-bit key when ``w * bits(V)`` fits in
  ``63 - bits(V)`` bits (orders up to 6 for V = 1024), else hashed to that many bits. A hash may merge two
  contexts, which gives a coarser but still valid conditional; the continuation token is never hashed, so a
  (context, token) count is never shared with another token and ``sum_v count(ctx, v) = count(ctx)``.
* ``p_ng(. | ctx) = count(ctx, .) / count(ctx)`` at the highest order (max_order down to min_order) whose
  context was seen at least ``min_count`` times; it sums to 1 over the whole vocabulary by construction.
* The mixed distribution ``p = (1 - a) p_model + a p_ng`` (a < 1; a = 0 where no order matched) is > 0
  everywhere because ``p_model`` is a softmax, and sums to 1; the realized token's probability is read off it.

Storage (:class:`NgramStore`): per order, a log-structured list of sorted runs of unique pair keys
``(ctx_key << bits(V)) | token`` with prefix sums of their counts and a per-run context directory. An insert
of ``k`` targets costs ``O(k log k)`` (``np.unique``) plus amortised ``O(log(n/k))`` linear merges per element;
a lookup of ``M`` positions costs ``O(M log n)`` per run and there are ``O(log(n/k))`` runs per order.
Memory is about 32 bytes per distinct (context, token) pair per order: for the 62M-token validation set and
orders 2..7 roughly 130M pairs, ~4 GB on the rank that holds them all (docs/evaluation.md, "Store cost").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

ALPHA_MODES = ("entropy", "fixed")
_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)
_MIX_MULT = np.uint64(0xBF58476D1CE4E5B9)
_INSERT_BLOCK = 1 << 22  # targets per np.unique call when catching up over a long stretch


@dataclass(kw_only=True)
class NgramConfig:
    """One n-gram mixer setting; several are scored in one pass that shares the model forward (a sweep)."""

    name: str = "ngram"
    """Name of this setting in the report (``final_int6_sliding_window_<name>``)."""
    min_order: int = 2
    """Lowest order to back off to (order n conditions on n-1 tokens; 1 = unigram)."""
    max_order: int = 7
    """Highest order tried first."""
    min_count: int = 2
    """An order is used only if its context was seen at least this many times."""
    alpha_mode: str = "entropy"
    """'entropy': a = ent_base + ent_range * sigmoid(ent_scale * (H - ent_thresh)) with H the model's entropy
    in nats (docs/record-stack.md §12.4 step 2); 'fixed': a = alpha."""
    alpha: float = 0.40
    """Mixing weight when alpha_mode is 'fixed' (seed NGRAM_ALPHA)."""
    ent_base: float = 0.05
    """Entropy rule: weight at low entropy."""
    ent_range: float = 0.55
    """Entropy rule: weight added at high entropy (ent_base + ent_range must stay below 1)."""
    ent_scale: float = 2.0
    """Entropy rule: sigmoid slope per nat."""
    ent_thresh: float = 4.0
    """Entropy rule: sigmoid midpoint in nats."""

    def __post_init__(self) -> None:
        def bad(key: str, msg: str) -> ValueError:
            return ValueError(f"ngram.{key}: {msg}")

        if not self.name or self.name == "model":
            raise bad("name", f"must be a non-empty name other than 'model', got {self.name!r}")
        if self.min_order < 1:
            raise bad("min_order", f"must be >= 1, got {self.min_order}")
        if self.max_order < self.min_order:
            raise bad("max_order", f"must be >= min_order={self.min_order}, got {self.max_order}")
        if self.min_count < 1:
            raise bad("min_count", f"must be >= 1, got {self.min_count}")
        if self.alpha_mode not in ALPHA_MODES:
            raise bad("alpha_mode", f"must be one of {ALPHA_MODES}, got {self.alpha_mode!r}")
        if not 0.0 <= self.alpha < 1.0:
            raise bad("alpha", f"must be in [0, 1) so the mixture keeps the model's support, got {self.alpha}")
        if self.ent_base < 0 or self.ent_range < 0 or not self.ent_base + self.ent_range < 1.0:
            raise bad("ent_range", f"need ent_base, ent_range >= 0 and ent_base + ent_range < 1, got "
                      f"{self.ent_base} + {self.ent_range}")

    @property
    def orders(self) -> range:
        """Orders from min_order to max_order."""
        return range(self.min_order, self.max_order + 1)

    def alpha_of(self, entropy: Tensor) -> Tensor:
        """Mixing weight per position from the model's entropy (nats); depends on the model only, never the target."""
        if self.alpha_mode == "fixed":
            return torch.full_like(entropy, self.alpha)
        return self.ent_base + self.ent_range * torch.sigmoid(self.ent_scale * (entropy - self.ent_thresh))


@dataclass(kw_only=True)
class NgramStoreConfig:
    """How the shared count store is filled (one store serves every mixer setting of a pass)."""

    update_tokens: int = 2048
    """Counts are updated in blocks: position t is scored with all targets before ``(t // update_tokens) *
    update_tokens``. Results do not depend on batch size or rank count; smaller is more adaptive, slower."""
    prefill: bool = True
    """Before a rank's first position, count every earlier target (they precede it in the stream, so this is
    valid and makes the result independent of the number of ranks). False: each rank starts empty (seed)."""

    def __post_init__(self) -> None:
        if self.update_tokens < 1:
            raise ValueError(f"ngram_store.update_tokens: must be >= 1, got {self.update_tokens}")


class _Run:
    """A sorted run of unique pair keys with prefix-summed counts and a directory of its contexts."""

    __slots__ = ("pair_keys", "pair_cum", "ctx_keys", "ctx_start")

    def __init__(self, pair_keys: np.ndarray, counts: np.ndarray, vbits: int) -> None:
        self.pair_keys = pair_keys
        self.pair_cum = np.zeros(pair_keys.size + 1, dtype=np.int64)
        np.cumsum(counts, out=self.pair_cum[1:])
        ctx = pair_keys >> vbits
        first = np.ones(ctx.size, dtype=bool)
        first[1:] = ctx[1:] != ctx[:-1]
        starts = np.flatnonzero(first)
        self.ctx_keys = ctx[starts]
        self.ctx_start = np.append(starts, pair_keys.size).astype(np.int64)

    @property
    def size(self) -> int:
        return int(self.pair_keys.size)

    def counts(self) -> np.ndarray:
        return np.diff(self.pair_cum)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, a).nbytes for a in self.__slots__)


def _merge(a: _Run, b: _Run, vbits: int) -> _Run:
    """One run holding the summed counts of ``a`` and ``b`` (linear: timsort merges the two sorted halves)."""
    keys = np.concatenate([a.pair_keys, b.pair_keys])
    counts = np.concatenate([a.counts(), b.counts()])
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    first = np.ones(keys.size, dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(first)
    return _Run(keys[starts], np.add.reduceat(counts, starts), vbits)


@dataclass
class Lookup:
    """Result of :meth:`NgramStore.lookup` for one order: context totals and where each context's pairs lie."""

    totals: np.ndarray
    """count(ctx) per position (0 where the context is unseen or reaches before the stream start)."""
    ranges: list[tuple[np.ndarray, np.ndarray]]
    """Per run, start/end indices of the context's pairs (equal where absent)."""


class NgramStore:
    """Exact (context, next-token) counts for several orders, filled strictly in stream order.

    Positions are target indices: position j predicts ``tokens[j + 1]`` and its order-n context is
    ``tokens[j - n + 2 : j + 1]``. The store holds exactly the targets in ``[start, horizon)``.

    Args:
        tokens: The whole token stream (1-D integer array); only ``tokens[: horizon + 1]`` is ever read.
        vocab_size: Number of token ids (all ids must be below it).
        orders: Orders to count.
    """

    def __init__(self, tokens: np.ndarray, vocab_size: int, orders: Iterable[int]) -> None:
        self._tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        self.vocab_size = int(vocab_size)
        self.vbits = max(1, (self.vocab_size - 1).bit_length())
        self.ctx_bits = 63 - self.vbits
        self.orders = tuple(sorted(set(int(n) for n in orders)))
        if not self.orders or self.orders[0] < 1:
            raise ValueError(f"n-gram orders must be >= 1, got {self.orders}")
        self._runs: dict[int, list[_Run]] = {n: [] for n in self.orders}
        self.start = 0
        """First target index the store counts (:meth:`skip_to` moves it)."""
        self.horizon = 0
        """One past the last target index the store has seen (0 if none): it holds the targets in
        ``[start, horizon)``; what invariant 3 checks."""
        self.num_inserted = 0

    @property
    def num_targets(self) -> int:
        """Number of target positions of the stream."""
        return self._tokens.size - 1

    @property
    def nbytes(self) -> int:
        """Memory held by the count runs."""
        return sum(r.nbytes for runs in self._runs.values() for r in runs)

    def num_runs(self, order: int) -> int:
        """Number of sorted runs of ``order`` (logarithmic in the number of inserts)."""
        return len(self._runs[order])

    def skip_to(self, position: int) -> None:
        """Start an empty store at ``position`` (targets before it are never counted)."""
        if self.num_inserted:
            raise RuntimeError("NgramStore.skip_to is only allowed before the first insert")
        self.start = int(position)

    def advance_to(self, position: int) -> None:
        """Insert every target from ``max(start, horizon)`` up to ``position`` (the caller guarantees they are
        already scored)."""
        position = int(position)
        begin = max(self.start, self.horizon)
        if position < begin:
            raise ValueError(f"cannot advance the n-gram store back from {begin} to {position}")
        if position > self.num_targets:
            raise ValueError(f"position {position} is past the stream's {self.num_targets} targets")
        for s in range(begin, position, _INSERT_BLOCK):
            self._insert(np.arange(s, min(s + _INSERT_BLOCK, position), dtype=np.int64))
        if position > begin:
            self.horizon = position

    def context_keys(self, positions: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
        """63-bit context keys of ``positions`` at ``order``; mask of positions whose context is in the stream."""
        w = order - 1
        valid = positions >= w - 1
        if w == 0:
            return np.zeros(positions.size, dtype=np.int64), valid
        idx = np.maximum(positions, w - 1)
        if w * self.vbits <= self.ctx_bits:  # exact: tokens packed side by side
            key = np.zeros(positions.size, dtype=np.int64)
            for k in range(w):
                key |= self._context_token(idx - k) << (self.vbits * k)
            return key, valid
        h = np.zeros(positions.size, dtype=np.uint64)  # hashed: contexts may merge (coarser, still valid)
        for k in range(w):
            h = (h ^ self._context_token(idx - k).astype(np.uint64)) * _HASH_MULT
        h ^= h >> np.uint64(31)
        h *= _MIX_MULT
        h ^= h >> np.uint64(29)
        return (h >> np.uint64(64 - self.ctx_bits)).astype(np.int64), valid

    def _context_token(self, index: np.ndarray) -> np.ndarray:
        """``tokens[index]``, clipped into the stream: indices past a short stream's end only occur for
        positions whose context is masked out as invalid."""
        return np.take(self._tokens, index, mode="clip")

    def _insert(self, positions: np.ndarray) -> None:
        if positions.size == 0:
            return
        nxt = self._tokens[positions + 1]
        if int(nxt.max()) >= self.vocab_size or int(nxt.min()) < 0:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}) for the n-gram store")
        for n in self.orders:
            ctx, valid = self.context_keys(positions, n)
            pairs = (ctx[valid] << self.vbits) | nxt[valid]
            if pairs.size == 0:
                continue
            keys, counts = np.unique(pairs, return_counts=True)
            runs = self._runs[n]
            runs.append(_Run(keys, counts, self.vbits))
            while len(runs) > 1 and runs[-2].size <= 2 * runs[-1].size:  # keep run sizes geometric
                b, a = runs.pop(), runs.pop()
                runs.append(_merge(a, b, self.vbits))
        self.num_inserted += positions.size

    def lookup(self, positions: np.ndarray, order: int) -> Lookup:
        """Context totals of ``positions`` at ``order`` (and where their pairs are, for :meth:`rows`)."""
        keys, valid = self.context_keys(positions, order)
        totals = np.zeros(positions.size, dtype=np.int64)
        ranges = []
        order_ = np.argsort(keys)
        sorted_keys = keys[order_]  # sorted needles: about twice as fast binary searches (cache locality)
        for run in self._runs[order]:
            i = np.empty_like(order_)
            i[order_] = np.searchsorted(run.ctx_keys, sorted_keys)
            i = np.minimum(i, run.ctx_keys.size - 1)
            found = valid & (run.ctx_keys[i] == keys)
            s = np.where(found, run.ctx_start[i], 0)
            e = np.where(found, run.ctx_start[i + 1], 0)
            totals += run.pair_cum[e] - run.pair_cum[s]
            ranges.append((s, e))
        return Lookup(totals, ranges)

    def pairs(self, order: int, found: Lookup, select: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored ``(context, token)`` count of the selected positions of a lookup, as sparse triples.

        Args:
            order: The lookup's order.
            found: A lookup of this store at ``order``.
            select: Indices into the lookup's positions.

        Returns:
            ``(row, token, count)``: ``row`` indexes ``select``; a (row, token) pair may appear once per run.
        """
        rows, toks, counts = [], [], []
        mask = (1 << self.vbits) - 1
        for run, (s_all, e_all) in zip(self._runs[order], found.ranges):
            s, e = s_all[select], e_all[select]
            lens = e - s
            total = int(lens.sum())
            if total == 0:
                continue
            row = np.repeat(np.arange(select.size), lens)
            offset = np.cumsum(lens) - lens
            idx = s[row] + (np.arange(total) - offset[row])
            rows.append(row)
            toks.append(run.pair_keys[idx] & mask)
            counts.append(run.pair_cum[idx + 1] - run.pair_cum[idx])
        if not rows:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        return np.concatenate(rows), np.concatenate(toks), np.concatenate(counts)

    def rows(self, order: int, found: Lookup, select: np.ndarray) -> np.ndarray:
        """Dense counts ``count(ctx, v)`` (K, vocab_size) float64 for the selected positions of a lookup."""
        out = np.zeros((select.size, self.vocab_size), dtype=np.float64)
        row, tok, count = self.pairs(order, found, select)
        np.add.at(out, (row, tok), count)
        return out


def ngram_distributions(
    store: NgramStore,
    positions: np.ndarray,
    mixers: Sequence[NgramConfig],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> list[tuple[Tensor, Tensor]]:
    """Backed-off n-gram distributions of ``positions`` for each mixer setting.

    For each mixer and position the highest order in ``[min_order, max_order]`` whose context count reaches
    ``min_count`` gives ``p_ng(v) = count(ctx, v) / count(ctx)`` (a row summing to 1); positions with no such
    order get a zero row and ``matched = 0``. Lower orders are only looked up for positions still unresolved.
    Only the sparse counts travel to ``device``, where the rows are scattered.

    Args:
        store: The count store (already holding exactly the targets allowed for these positions).
        positions: Target indices (M,).
        mixers: Mixer settings.
        dtype: Output dtype.
        device: Output device.

    Returns:
        Per mixer, ``(p_ng (M, V), matched (M,))`` with ``matched`` 1.0 where an order was found, else 0.0.
    """
    chosen = [np.zeros(positions.size, dtype=np.int64) for _ in mixers]
    looked: dict[int, tuple[np.ndarray, Lookup]] = {}
    for n in sorted({n for m in mixers for n in m.orders}, reverse=True):
        active = [(m, sel) for m, sel in zip(mixers, chosen) if m.min_order <= n <= m.max_order]
        idx = np.flatnonzero(np.any([sel == 0 for _, sel in active], axis=0))
        if idx.size == 0:
            continue
        found = store.lookup(positions[idx], n)
        looked[n] = (idx, found)
        for m, sel in active:
            hit = (sel[idx] == 0) & (found.totals >= m.min_count)
            sel[idx[hit]] = n
    triples = []  # (position index, token, count / count(ctx), order)
    for n, (idx, found) in looked.items():
        need = np.flatnonzero(np.any([sel[idx] == n for sel in chosen], axis=0))
        if need.size:
            row, tok, count = store.pairs(n, found, need)
            triples.append((idx[need[row]], tok, count / found.totals[need[row]], n))
    out = []
    for sel in chosen:
        p = torch.zeros(positions.size, store.vocab_size, dtype=dtype, device=device)
        for pos_idx, tok, prob, n in triples:
            keep = sel[pos_idx] == n
            index = (torch.from_numpy(pos_idx[keep]).to(device), torch.from_numpy(tok[keep]).to(device))
            p.index_put_(index, torch.from_numpy(prob[keep]).to(device=device, dtype=dtype), accumulate=True)
        out.append((p, torch.from_numpy((sel > 0).astype(np.float64)).to(device=device, dtype=dtype)))
    return out

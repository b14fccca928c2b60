"""N-gram store and mixer: exact counts against a brute-force counter, normalized backoff distributions, the
entropy rule's values, and a mixer that is independent of batch size and rank split."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from golf_lit.data.tokenizer import ByteLUTs
from golf_lit.eval.invariants import ScoreRecorder
from golf_lit.eval.ngram import NgramConfig, NgramStore, NgramStoreConfig, ngram_distributions
from golf_lit.eval.strategies import EvalContext
from golf_lit.eval.strategies.sliding import Sliding, SlidingConfig
from golf_lit.eval.sums import ScoreSums
from golf_lit.model.gpt import GPT

from .conftest import tiny_config


def brute_counts(tokens: np.ndarray, upto: int, orders) -> dict:
    """(order, context tuple) -> Counter of next tokens over targets [0, upto)."""
    table: dict = defaultdict(Counter)
    for j in range(upto):
        for n in orders:
            if j >= n - 2:
                table[(n, tuple(tokens[j - n + 2 : j + 1]))][int(tokens[j + 1])] += 1
    return table


def repetitive(n: int, vocab: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    motif = rng.integers(0, vocab, 13)
    out = np.resize(motif, n)
    noise = rng.random(n) < 0.2
    out[noise] = rng.integers(0, vocab, int(noise.sum()))
    return out.astype(np.int64)


@pytest.mark.parametrize("vocab,orders", [(8, (1, 2, 3, 5)), (256, (2, 8))])  # 2nd: order-8 contexts are hashed
def test_store_counts_match_brute_force(vocab, orders):
    tokens = repetitive(400, 8) * (vocab // 8) + (vocab > 8)
    store = NgramStore(tokens, vocab, orders)
    assert ((max(orders) - 1) * store.vbits > store.ctx_bits) == (vocab == 256)
    for stop in (5, 37, 38, 150, 333):  # several inserts, so runs are merged along the way
        store.advance_to(stop)
    assert store.horizon == 333 and store.num_inserted == 333
    ref = brute_counts(tokens, 333, orders)
    queries = np.arange(0, 399)
    for n in orders:
        found = store.lookup(queries, n)
        rows = store.rows(n, found, np.arange(queries.size))
        np.testing.assert_array_equal(rows.sum(1), found.totals)  # sum_v count(ctx, v) = count(ctx)
        for q in queries:
            ctx = tuple(tokens[q - n + 2 : q + 1]) if q >= n - 2 else None
            expect = ref.get((n, ctx), Counter()) if ctx is not None else Counter()
            assert found.totals[q] == sum(expect.values())
            nz = np.flatnonzero(rows[q])
            assert {int(v): int(rows[q, v]) for v in nz} == dict(expect)
        assert store.num_runs(n) <= 4


def test_store_refuses_to_go_back_or_past_the_stream():
    store = NgramStore(np.arange(10) % 3, 3, (2,))
    store.advance_to(5)
    with pytest.raises(ValueError, match="back"):
        store.advance_to(4)
    with pytest.raises(ValueError, match="past"):
        store.advance_to(10)
    with pytest.raises(RuntimeError, match="skip_to"):
        store.skip_to(7)


def test_skip_to_starts_empty():
    tokens = repetitive(100, 5)
    store = NgramStore(tokens, 5, (2,))
    store.skip_to(60)
    store.advance_to(80)
    ref = brute_counts(tokens, 80, (2,))
    early = brute_counts(tokens, 60, (2,))
    found = store.lookup(np.arange(80, 99), 2)
    for i, q in enumerate(range(80, 99)):
        key = (2, (int(tokens[q]),))
        assert found.totals[i] == sum(ref[key].values()) - sum(early[key].values())


def test_backoff_picks_the_highest_order_with_enough_counts():
    tokens = np.array([0, 1, 2, 0, 1, 3, 0, 1, 2, 4, 0, 1, 2, 5], dtype=np.int64)
    store = NgramStore(tokens, 6, (2, 3, 4))
    store.advance_to(9)  # targets 0..8: "0 1 -> 2" twice and "-> 3" once; "0 1 2 -> 0", "-> 4"; "0 -> 1" 3 times
    pos = np.array([9, 10, 11, 12])  # contexts ending (1 2 4), (2 4 0), (4 0 1), (0 1 2)
    mixers = [NgramConfig(name="a", max_order=4, min_count=2), NgramConfig(name="c", max_order=4, min_count=3)]
    (pa, ma), (pc, mc) = ngram_distributions(store, pos, mixers)
    assert ma.tolist() == [0.0, 1.0, 1.0, 1.0] and mc.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert float(pa[0].abs().sum()) == 0.0  # nothing seen: zero row, alpha will be 0
    assert float(pa[1, 1]) == 1.0  # only the order-2 context "0" was seen (3 times, always -> 1)
    np.testing.assert_allclose(pa[2].numpy()[[2, 3]], [2 / 3, 1 / 3])  # order 3 "0 1" (order 4 "4 0 1" unseen)
    np.testing.assert_allclose(pa[3].numpy()[[0, 4]], [0.5, 0.5])  # order 4 "0 1 2" seen twice
    np.testing.assert_array_equal(pc[:3].numpy(), pa[:3].numpy())
    assert float(pc[3].abs().sum()) == 0.0  # every context of position 12 seen only twice < 3
    np.testing.assert_allclose(pa.sum(1).numpy(), ma.numpy(), rtol=0, atol=1e-15)


def test_entropy_alpha_matches_the_spec_table():
    cfg = NgramConfig()
    got = cfg.alpha_of(torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)).tolist()
    assert [round(a, 3) for a in got] == [0.060, 0.116, 0.325, 0.534, 0.590]  # docs/record-stack.md §12.4 step 2
    assert NgramConfig(alpha_mode="fixed", alpha=0.25).alpha_of(torch.zeros(3)).tolist() == [0.25] * 3


@pytest.mark.parametrize("kwargs,key", [
    ({"min_order": 0}, "min_order"), ({"min_order": 4, "max_order": 3}, "max_order"), ({"min_count": 0}, "min_count"),
    ({"alpha_mode": "oracle"}, "alpha_mode"), ({"alpha": 1.0}, "alpha"), ({"name": "model"}, "name"),
])
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"ngram.{key}"):
        NgramConfig(**kwargs)
    with pytest.raises(ValueError, match="ngram_store.update_tokens"):
        NgramStoreConfig(update_tokens=0)


@pytest.fixture(scope="module")
def tiny():
    V = 64
    torch.manual_seed(4)
    model = GPT(tiny_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    luts = ByteLUTs(torch.full((V,), 2, dtype=torch.int16), torch.zeros(V, dtype=torch.bool),
                    torch.zeros(V, dtype=torch.bool))
    tokens = torch.from_numpy(repetitive(600, V, seed=5))
    return model, tokens, luts


MIXERS = [NgramConfig(), NgramConfig(name="fixed", alpha_mode="fixed", alpha=0.3, min_order=1, max_order=3)]


def test_mixer_is_independent_of_batch_size_and_rank_split(tiny):
    model, tokens, luts = tiny
    store = NgramStoreConfig(update_tokens=32)
    def run(batch_seqs, **context):
        ctx = EvalContext(model, tokens, luts, mixers=MIXERS, store=store, **context)
        return Sliding(SlidingConfig(seq_len=32, stride=8, batch_seqs=batch_seqs)).score(ctx)

    ref = run(1)
    big = run(32)
    parts = [run(3, rank=r, world_size=3) for r in range(3)]
    for name in ("model", "ngram", "fixed"):
        total = sum((p[name] for p in parts), ScoreSums())
        for got in (big[name], total):
            assert got.nll_sum == pytest.approx(ref[name].nll_sum, rel=1e-9)
            assert (got.token_count, got.byte_count) == (ref[name].token_count, ref[name].byte_count)


def test_mixer_helps_on_repetitive_text_and_counts_only_earlier_blocks(tiny):
    model, tokens, luts = tiny
    rec = ScoreRecorder()
    ctx = EvalContext(model, tokens, luts, mixers=MIXERS, store=NgramStoreConfig(update_tokens=64), record=rec)
    sums = Sliding(SlidingConfig(seq_len=32, stride=8)).score(ctx)
    assert sums["ngram"].val_bpb < sums["model"].val_bpb - 0.5
    for e in rec.events:
        if e.variant == "ngram":
            assert e.horizon == int(e.positions.min()) // 64 * 64
    def probs_before(variant, stop):
        return np.concatenate([e.probs[e.positions < stop] for e in rec.events if e.variant == variant])

    np.testing.assert_allclose(probs_before("ngram", 64), probs_before("model", 64), rtol=1e-6)  # nothing counted


def test_without_prefill_each_rank_starts_empty(tiny):
    model, tokens, luts = tiny
    cfg = SlidingConfig(seq_len=32, stride=8)
    rec = ScoreRecorder()
    Sliding(cfg).score(EvalContext(model, tokens, luts, rank=1, world_size=2, mixers=MIXERS[:1], record=rec,
                                   store=NgramStoreConfig(update_tokens=32, prefill=False)))
    first = next(e for e in rec.events if e.variant == "ngram")
    assert first.horizon == 0 and int(first.positions.min()) > 200
    model_first = next(e for e in rec.events if e.variant == "model")
    np.testing.assert_allclose(first.probs, model_first.probs[: first.probs.size], rtol=1e-6)

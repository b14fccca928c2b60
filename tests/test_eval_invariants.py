"""The four honesty invariants, through sliding windows + score-first TTT + the n-gram mixer together.

Each invariant is checked from outside (a ScoreRecorder) on the real code, and each check is shown to fail on a
deliberately broken variant built here (with the runtime guards switched off, so the checker, not the guard,
has to catch it); the guards themselves are shown to stop the same broken variants.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from golf_lit.data.tokenizer import ByteLUTs
from golf_lit.eval import invariants, scorer
from golf_lit.eval.invariants import InvariantError, ScoreRecorder, prefix_violations
from golf_lit.eval.ngram import NgramConfig, NgramStoreConfig
from golf_lit.eval.strategies import EvalContext, sliding, ttt
from golf_lit.eval.strategies.sliding import Sliding, SlidingConfig, Windows
from golf_lit.eval.strategies.ttt import TestTimeTrainer, TestTimeTraining, TTTConfig
from golf_lit.model.gpt import GPT

from .conftest import tiny_config

V = 64
N = 256
T_PERTURB = 150  # token index; lies inside TTT chunk 2 and n-gram block 144..159
SL = SlidingConfig(seq_len=32, stride=8, batch_seqs=3)
TTT = TTTConfig(chunk_tokens=64, epochs=1, lr=0.05, batch_seqs=2)
MIXERS = [NgramConfig(name="ng", min_order=1, max_order=4, min_count=1), NgramConfig(name="ngfix", alpha_mode="fixed")]
STORE = NgramStoreConfig(update_tokens=16)


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    motif = torch.randint(0, V, (24,), generator=g)
    tokens = motif.repeat(N // 24 + 2)[: N + 1].clone()
    noise = torch.rand(N + 1, generator=g) < 0.15
    tokens[noise] = torch.randint(0, V, (int(noise.sum()),), generator=g)
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    luts = ByteLUTs(
        torch.randint(1, 4, (V,), generator=g, dtype=torch.int16),
        torch.rand(V, generator=g) < 0.3,
        torch.arange(V) == 0,
    )
    return model, tokens, luts


def run_all(model: nn.Module, tokens: torch.Tensor, luts: ByteLUTs, keep_dists: bool = False) -> ScoreRecorder:
    """TTT + n-gram (variants 'model', 'ng', 'ngfix') and plain sliding + n-gram ('sliding/...')."""
    rec = ScoreRecorder(keep_dists=keep_dists)
    TestTimeTraining(TTT, SL).score(EvalContext(model, tokens, luts, mixers=MIXERS, store=STORE, record=rec))

    def sliding_rec(variant, *args):
        rec(f"sliding/{variant}", *args)

    Sliding(SL).score(EvalContext(model, tokens, luts, mixers=MIXERS, store=STORE, record=sliding_rec))
    return rec


def perturbed(tokens: torch.Tensor, t: int = T_PERTURB) -> torch.Tensor:
    out = tokens.clone()
    out[t] = (out[t] + 1) % V
    return out


def disable_guards(monkeypatch) -> None:
    for name in ("require_increasing", "require_unseen", "require_normalized", "require_scored"):
        monkeypatch.setattr(invariants, name, lambda *a, **k: None)


def train_then_score(self: TestTimeTrainer) -> None:
    """Broken TTT: adapt on each chunk *before* scoring it (the seed's effective order, docs/record-stack.md §11.3)."""
    for c in range(self.num_chunks):
        if c < self.num_chunks - 1:
            self.train_chunk(c)
        self.score_chunk(c)


def insert_before_scoring(monkeypatch) -> None:
    """Broken n-gram: count each block's own targets before scoring it."""
    original = scorer.Scorer._prepare_store

    def eager(self, block_start, vocab_size):
        end = min(block_start + self.store_config.update_tokens, self.num_targets)
        return original(self, end, vocab_size)

    monkeypatch.setattr(scorer.Scorer, "_prepare_store", eager)


def seed_windows(num_targets: int, seq_len: int, stride: int) -> Windows:
    """Broken windows: the seed's list, whose tail windows re-score the final tokens (docs/record-stack.md §10.2)."""
    start = torch.arange(0, num_targets, stride)
    end = (start + seq_len).clamp(max=num_targets)
    score_from = torch.where(start == 0, 0, start + (end - start - stride).clamp(min=0))
    return Windows(start, score_from, end)


def seed_hashed_ngram(store, positions, mixers, dtype=torch.float64, device="cpu"):
    """Broken n-gram: the seed's 'probability' min(F[h(ctx, v)], C[h(ctx)]) / C for every candidate v, with
    the candidate (target) inside the hashed key and 16 buckets (docs/record-stack.md §12.3-12.5)."""
    buckets = 16
    toks = store._tokens
    seen = np.arange(store.horizon)
    ctx_counts = np.bincount(toks[seen] % buckets, minlength=buckets)
    full = np.bincount((toks[seen] * 7 ^ toks[seen + 1] * 13) % buckets, minlength=buckets)
    c = ctx_counts[toks[positions] % buckets][:, None]
    f = full[(toks[positions][:, None] * 7 ^ np.arange(store.vocab_size)[None, :] * 13) % buckets]
    p = np.minimum(f, c) / np.maximum(c, 1)
    matched = (c[:, 0] > 0).astype(np.float64)
    out = torch.from_numpy(p).to(device=device, dtype=dtype), torch.from_numpy(matched).to(device=device, dtype=dtype)
    return [out for _ in mixers]


# --- Invariant 1: p_t depends only on the artifact and tokens before t ---------------------------------------


def test_invariant1_perturbing_a_token_leaves_earlier_distributions_unchanged(setup):
    model, tokens, luts = setup
    a = run_all(model, tokens, luts, keep_dists=True)
    b = run_all(model, perturbed(tokens), luts, keep_dists=True)
    assert set(a.variants()) == {"model", "ng", "ngfix", "sliding/model", "sliding/ng", "sliding/ngfix"}
    assert prefix_violations(a, b, T_PERTURB) == []
    for variant in a.variants():  # not vacuous: the change is visible from position t on
        da, db = a.distributions(variant), b.distributions(variant)
        assert not np.array_equal(da[T_PERTURB], db[T_PERTURB]), variant
    da, db = a.distributions("model"), b.distributions("model")  # TTT carries it into later chunks
    assert not np.array_equal(da[200], db[200])


@pytest.mark.parametrize("broken", ["ttt_train_then_score", "ngram_insert_before_score", "peeking_model"])
def test_invariant1_check_catches_broken_variants(setup, monkeypatch, broken):
    model, tokens, luts = setup
    disable_guards(monkeypatch)
    if broken == "ttt_train_then_score":
        monkeypatch.setattr(TestTimeTrainer, "run", train_then_score)
    elif broken == "ngram_insert_before_score":
        insert_before_scoring(monkeypatch)
    else:
        model = PeekingModel(model)
    a = run_all(model, tokens, luts, keep_dists=True)
    b = run_all(model, perturbed(tokens), luts, keep_dists=True)
    problems = prefix_violations(a, b, T_PERTURB)
    assert problems
    if broken == "ngram_insert_before_score":  # the neural-only variants stay honest
        assert not any(p.startswith(("model:", "sliding/model:")) for p in problems)


class PeekingModel(nn.Module):
    """Broken model: position i's logits see input token i + 1 (a non-causal forward)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.inner(ids)
        nxt = torch.cat([ids[:, 1:], ids[:, -1:]], dim=1)
        return logits + 3.0 * nn.functional.one_hot(nxt, logits.size(-1)).to(logits.dtype)


# --- Invariant 2: a full distribution summing to 1 with every entry > 0 --------------------------------------


def test_invariant2_every_scored_probability_comes_from_a_normalized_distribution(setup):
    model, tokens, luts = setup
    rec = run_all(model, tokens, luts)
    for variant in rec.variants():
        assert rec.check_normalized(variant) == [], variant
    mixed = np.concatenate([e.probs for e in rec.events if e.variant == "ng"])
    plain = np.concatenate([e.probs for e in rec.events if e.variant == "model"])
    assert not np.allclose(mixed, plain)  # the mixer really changed the distributions it checked


@pytest.mark.parametrize("broken", ["seed_hashed_target_in_key", "alpha_one"])
def test_invariant2_check_and_guard_catch_broken_variants(setup, monkeypatch, broken):
    model, tokens, luts = setup
    mixers = [NgramConfig(name="ng", alpha_mode="fixed", alpha=0.5, min_order=1, max_order=2, min_count=1)]
    if broken == "seed_hashed_target_in_key":
        monkeypatch.setattr(scorer, "ngram_distributions", seed_hashed_ngram)
    else:
        mixers[0].alpha = 1.0  # bypasses NgramConfig's validation (alpha < 1): p = p_ng has zeros
    with pytest.raises(InvariantError, match="invariant 2"):
        Sliding(SL).score(EvalContext(model, tokens, luts, mixers=mixers, store=STORE))
    disable_guards(monkeypatch)
    rec = ScoreRecorder()
    Sliding(SL).score(EvalContext(model, tokens, luts, mixers=mixers, store=STORE, record=rec))
    problems = rec.check_normalized("ng")
    assert problems and rec.check_normalized("model") == []
    assert any(("sums off" if broken.startswith("seed") else "zero/negative") in p for p in problems)


def test_ngram_config_rejects_alpha_one():
    with pytest.raises(ValueError, match="ngram.alpha"):
        NgramConfig(alpha_mode="fixed", alpha=1.0)
    with pytest.raises(ValueError, match="ngram.ent_range"):
        NgramConfig(ent_base=0.5, ent_range=0.5)


# --- Invariant 3: the state that scores token t never saw t --------------------------------------------------


def test_invariant3_state_that_scores_a_position_has_not_seen_it(setup):
    model, tokens, luts = setup
    rec = run_all(model, tokens, luts)
    for variant in rec.variants():
        assert rec.check_score_before_update(variant) == [], variant
    # Not vacuous: TTT and the n-gram store had seen plenty when scoring later positions.
    last = {e.variant: e for e in rec.events}
    assert last["model"].horizon == 3 * TTT.chunk_tokens  # trained on chunks 0..2 before scoring chunk 3
    assert last["sliding/ng"].horizon == (N - 1) // STORE.update_tokens * STORE.update_tokens
    for e in rec.events:
        if e.variant == "sliding/ng":  # exactly the blocks before: the store is as fresh as allowed
            assert e.horizon == int(e.positions.min()) // STORE.update_tokens * STORE.update_tokens


@pytest.mark.parametrize("broken", ["ttt_train_then_score", "ngram_insert_before_score"])
def test_invariant3_check_and_guard_catch_broken_variants(setup, monkeypatch, broken):
    model, tokens, luts = setup
    if broken == "ttt_train_then_score":
        monkeypatch.setattr(TestTimeTrainer, "run", train_then_score)
    else:
        insert_before_scoring(monkeypatch)
    with pytest.raises(InvariantError, match="invariant 3"):
        run_all(model, tokens, luts)
    disable_guards(monkeypatch)
    rec = run_all(model, tokens, luts)
    flagged = [v for v in rec.variants() if rec.check_score_before_update(v)]
    if broken == "ttt_train_then_score":
        assert set(flagged) == {"model", "ng", "ngfix"}
    else:
        assert set(flagged) == {"ng", "ngfix", "sliding/ng", "sliding/ngfix"}


def test_ttt_refuses_to_train_past_the_scored_positions(setup):
    model, tokens, luts = setup
    trainer = TestTimeTrainer(EvalContext(model, tokens, luts), TTT, SL)
    trainer.score_chunk(0)
    trainer.chunk_sequences = lambda c: torch.tensor([[0, TTT.chunk_tokens + SL.seq_len]])  # reaches into chunk 1
    with pytest.raises(InvariantError, match="invariant 3"):
        trainer.train_chunk(0)


# --- Invariant 4: every token scored exactly once ------------------------------------------------------------


def test_invariant4_every_position_scored_exactly_once(setup):
    model, tokens, luts = setup
    rec = run_all(model, tokens, luts)
    for variant in rec.variants():
        assert rec.check_once(variant, N) == [], variant


def test_invariant4_check_and_guard_catch_the_seed_tail_double_count(setup, monkeypatch):
    model, tokens, luts = setup
    monkeypatch.setattr(sliding, "sliding_windows", seed_windows)
    monkeypatch.setattr(ttt, "sliding_windows", seed_windows)
    with pytest.raises(InvariantError, match="invariant 4"):
        run_all(model, tokens, luts)
    disable_guards(monkeypatch)
    rec = run_all(model, tokens, luts)
    for variant in rec.variants():
        problems = rec.check_once(variant, N)
        assert any("more than once" in p for p in problems), variant
    extra = rec.positions("sliding/model").size - N
    assert extra == (SL.seq_len // SL.stride - 1) * SL.stride  # the final stride re-scored seq_len/stride times

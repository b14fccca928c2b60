"""Sliding-window evaluation: window list by hand and at record scale, equality with the non-overlapping eval,
independence from batch size, rank split and padding."""

from __future__ import annotations

import math

import pytest
import torch

from golf_lit.data.tokenizer import ByteLUTs
from golf_lit.eval.strategies import EvalContext, sliding
from golf_lit.eval.strategies.roundtrip import Roundtrip
from golf_lit.eval.strategies.sliding import Sliding, SlidingConfig, rank_positions, sliding_windows
from golf_lit.eval.sums import ScoreSums
from golf_lit.model.gpt import GPT

from .conftest import tiny_config

V = 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = GPT(tiny_config()).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.2)
    return m


@pytest.fixture(scope="module")
def luts():
    g = torch.Generator().manual_seed(2)
    return ByteLUTs(torch.randint(0, 4, (V,), generator=g, dtype=torch.int16), torch.rand(V, generator=g) < 0.4,
                    torch.arange(V) < 2)


def sliding_sums(model, tokens, luts, cfg: SlidingConfig, **context) -> ScoreSums:
    return Sliding(cfg).score(EvalContext(model, tokens, luts, **context))["model"]


def stream(n_targets: int, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, V, (n_targets + 1,), generator=torch.Generator().manual_seed(seed))


def test_windows_by_hand():
    w = sliding_windows(10, seq_len=4, stride=2)
    assert w.start.tolist() == [0, 2, 4, 6]
    assert w.end.tolist() == [4, 6, 8, 10]
    assert w.score_from.tolist() == [0, 4, 6, 8]
    w = sliding_windows(11, seq_len=4, stride=3)  # last window shorter than seq_len
    assert (w.start.tolist(), w.end.tolist(), w.score_from.tolist()) == ([0, 3, 6, 9], [4, 7, 10, 11], [0, 4, 7, 10])
    w = sliding_windows(3, seq_len=8, stride=2)  # stream shorter than a window
    assert (w.start.tolist(), w.end.tolist(), w.score_from.tolist()) == ([0], [3], [0])


@pytest.mark.parametrize("n,seq_len,stride", [(1, 4, 1), (100, 16, 4), (101, 16, 5), (64, 16, 16), (50, 7, 3)])
def test_windows_cover_each_position_once_with_full_context(n, seq_len, stride):
    w = sliding_windows(n, seq_len, stride)
    scored = torch.cat([torch.arange(int(a), int(b)) for a, b in zip(w.score_from, w.end)])
    assert scored.tolist() == list(range(n))
    assert bool((w.end > w.score_from).all()) and bool((w.end - w.start <= seq_len).all())
    assert len(w) == 1 + max(0, math.ceil((n - seq_len) / stride))
    context = scored - torch.repeat_interleave(w.start, w.end - w.score_from) + 1
    assert bool((context >= torch.clamp(scored + 1, max=seq_len - stride + 1)).all())


def test_record_scale_window_count_and_the_seed_double_count():
    n, seq_len, stride = 62_021_632, 2048, 64
    w = sliding_windows(n, seq_len, stride)
    assert len(w) == 969_057 and int((w.end - w.score_from).sum()) == n
    # The seed's list: every start < N, later windows score their last min(stride, wlen) positions.
    start = torch.arange(0, n, stride)
    wlen = (start + seq_len).clamp(max=n) - start
    seed_scored = int(wlen[0]) + int(torch.minimum(wlen[1:], torch.tensor(stride)).sum())
    assert len(start) == 969_088 and seed_scored - n == 1984  # docs/record-stack.md §10.2: 64 tokens scored 32 times


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="sliding.stride"):
        SlidingConfig(seq_len=16, stride=32)
    with pytest.raises(ValueError, match="sliding.batch_seqs"):
        SlidingConfig(batch_seqs=0)


def test_stride_equal_to_seq_len_is_the_non_overlapping_eval(model, luts):
    tokens = stream(6 * 16)
    s = Sliding(SlidingConfig(seq_len=16, stride=16, batch_seqs=4)).score(EvalContext(model, tokens, luts))["model"]
    ref = Roundtrip(seq_len=16, batch_seqs=5).score(EvalContext(model, tokens, luts))["model"]
    assert s.token_count == ref.token_count and s.byte_count == ref.byte_count
    assert _rel(s, ref) <= 1e-12


def test_overlap_changes_the_score_and_counts_every_token(model, luts):
    tokens = stream(97)
    s = sliding_sums(model, tokens, luts, SlidingConfig(seq_len=16, stride=4, batch_seqs=8))
    flat = sliding_sums(model, tokens, luts, SlidingConfig(seq_len=16, stride=16, batch_seqs=8))
    assert s.token_count == flat.token_count == 97 and s.byte_count == flat.byte_count
    assert s.nll_sum != flat.nll_sum


def _rel(a: ScoreSums, b: ScoreSums) -> float:
    return max(abs(x - y) / max(abs(y), 1e-300) for x, y in zip(vars(a).values(), vars(b).values()))


def test_batch_size_and_rank_split_do_not_change_the_result(model, luts):
    tokens = stream(301)
    cfg = SlidingConfig(seq_len=32, stride=8, batch_seqs=1)
    ref = sliding_sums(model, tokens, luts, cfg)
    for batch in (32, 5):
        got = sliding_sums(model, tokens, luts, SlidingConfig(seq_len=32, stride=8, batch_seqs=batch))
        assert _rel(got, ref) <= 1e-9
    for world in (2, 3):
        parts = [sliding_sums(model, tokens, luts, cfg, rank=r, world_size=world) for r in range(world)]
        total = sum(parts, ScoreSums())
        assert _rel(total, ref) <= 1e-9
        assert [p.token_count for p in parts] == [rank_positions(301, cfg, r, world) for r in range(world)]


def test_padding_never_reaches_a_scored_position(model, luts, monkeypatch):
    tokens = stream(45)  # windows of 32 with stride 8: the last one holds 13 real tokens and 19 pads
    cfg = SlidingConfig(seq_len=32, stride=8, batch_seqs=2)
    ref = sliding_sums(model, tokens, luts, cfg)
    monkeypatch.setattr(sliding, "PAD_ID", 17)
    assert sliding_sums(model, tokens, luts, cfg) == ref


def test_model_mode_is_restored(model, luts):
    model.train()
    sliding_sums(model, stream(40), luts, SlidingConfig(seq_len=16, stride=8))
    assert model.training
    model.eval()

"""Score-first TTT: chunk plan, training only on scored targets, no-op settings equal sliding, the artifact model
stays pristine, frozen blocks stay frozen, lr schedule, and the adaptation actually helps on repetitive text."""

from __future__ import annotations

import math

import pytest
import torch

from golf_lit.data.tokenizer import ByteLUTs
from golf_lit.eval.strategies import EvalContext
from golf_lit.eval.strategies.sliding import Sliding, SlidingConfig
from golf_lit.eval.strategies.ttt import TestTimeTrainer, TestTimeTraining, TTTConfig
from golf_lit.model.gpt import GPT

from .conftest import tiny_config

V = 64
SL = SlidingConfig(seq_len=32, stride=8, batch_seqs=4)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(5)
    model = GPT(tiny_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    g = torch.Generator().manual_seed(6)
    motif = torch.randint(0, V, (20,), generator=g)
    tokens = motif.repeat(20)[:301]
    luts = ByteLUTs(torch.full((V,), 2, dtype=torch.int16), torch.zeros(V, dtype=torch.bool),
                    torch.zeros(V, dtype=torch.bool))
    return model, tokens, luts


def test_chunk_plan_and_training_sequences(setup):
    model, tokens, luts = setup
    cfg = TTTConfig(chunk_tokens=70, batch_seqs=2)
    trainer = TestTimeTrainer(EvalContext(model, tokens, luts), cfg, SL)
    assert trainer.num_chunks == math.ceil(300 / 70)
    bounds = trainer.chunk_bounds
    assert bounds[0] == 0 and bounds[-1] == len(trainer.windows) and bounds == sorted(bounds)
    for c in range(trainer.num_chunks):
        first = trainer.windows.score_from[bounds[c] : bounds[c + 1]]
        assert bool(((first // 70) == c).all())  # each window sits in the chunk of its first scored position
        seqs = trainer.chunk_sequences(c)
        assert int(seqs[0, 0]) == 70 * c and int(seqs[-1, 1]) == min(70 * (c + 1), 300)
        assert bool((seqs[:, 1] - seqs[:, 0] <= SL.seq_len).all()) and bool((seqs[1:, 0] == seqs[:-1, 1]).all())
        # every training target is scored by the time chunk c is done (the boundary sequence is truncated)
        assert int(seqs[:, 1].max()) <= int(trainer.windows.end[bounds[c + 1] - 1])


def test_lr_schedule():
    cfg = TTTConfig(lr=0.002)
    assert [cfg.chunk_lr(c, 5) for c in (0, 2, 4)] == pytest.approx([0.002, 0.001, 0.0])
    assert TTTConfig(lr=1e-4, cosine=False).chunk_lr(3, 5) == 1e-4
    assert cfg.chunk_lr(0, 1) == 0.002


@pytest.mark.parametrize("cfg", [TTTConfig(chunk_tokens=64, epochs=0), TTTConfig(chunk_tokens=64, lr=0.0)])
def test_no_adaptation_equals_sliding(setup, cfg):
    model, tokens, luts = setup
    got = TestTimeTraining(cfg, SL).score(EvalContext(model, tokens, luts))["model"]
    ref = Sliding(SL).score(EvalContext(model, tokens, luts))["model"]
    assert got.token_count == ref.token_count == 300 and got.byte_count == ref.byte_count
    assert got.nll_sum == pytest.approx(ref.nll_sum, rel=1e-12)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adamw", 3e-3)])
def test_adaptation_helps_on_repetitive_text_and_leaves_the_artifact_model_alone(setup, optimizer, lr):
    model, tokens, luts = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TTTConfig(chunk_tokens=64, epochs=2, optimizer=optimizer, lr=lr, cosine=False)
    got = TestTimeTraining(cfg, SL).score(EvalContext(model, tokens, luts))["model"]
    ref = Sliding(SL).score(EvalContext(model, tokens, luts))["model"]
    assert got.val_loss < ref.val_loss - 0.05
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_frozen_blocks_do_not_move(setup):
    model, tokens, luts = setup
    cfg = TTTConfig(chunk_tokens=64, freeze_blocks=1, lr=0.1)
    trainer = TestTimeTrainer(EvalContext(model, tokens, luts), cfg, SL)
    trainer.run()
    assert trainer.horizon == 256
    for (name, p), (_, q) in zip(trainer.model.named_parameters(), model.named_parameters()):
        assert torch.equal(p, q) == name.startswith("blocks.0."), name
    with pytest.raises(ValueError, match="ttt.freeze_blocks"):
        TestTimeTrainer(EvalContext(model, tokens, luts), TTTConfig(freeze_blocks=3), SL)


def test_gradients_are_summed_across_ranks_through_the_callable(setup):
    model, tokens, luts = setup
    calls = []

    def fake_all_reduce(t):  # two identical ranks: the sum is twice the local gradient
        calls.append(t.numel())
        return 2 * t

    ctx = EvalContext(model, tokens, luts, rank=0, world_size=2, all_reduce=fake_all_reduce)
    trainer = TestTimeTrainer(ctx, TTTConfig(chunk_tokens=128, epochs=1), SL)
    trainer.run()
    n_params = sum(p.numel() for p in trainer.params)
    assert calls and all(c == n_params for c in calls)
    assert len(calls) == 2  # chunks 0 and 1 train (one step each); the last chunk is only scored


@pytest.mark.parametrize("kwargs,key", [
    ({"optimizer": "lion"}, "optimizer"), ({"chunk_tokens": 0}, "chunk_tokens"), ({"epochs": -1}, "epochs"),
    ({"momentum": 1.0}, "momentum"), ({"name": "model"}, "name"),
])
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"ttt.{key}"):
        TTTConfig(**kwargs)

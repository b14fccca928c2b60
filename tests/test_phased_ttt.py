"""Phased score-first TTT (docs/top-stack.md §6.2-6.4): equivalence at zero adapters, the score-first invariants
with a broken variant each, deterministic phases, and rank independence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from golf_lit.data.byte_source import SidecarBytes
from golf_lit.eval import invariants
from golf_lit.eval.invariants import InvariantError, PhaseTrace, ScoreRecorder
from golf_lit.eval.strategies import EvalContext
from golf_lit.eval.strategies.lora import LoRAHooks
from golf_lit.eval.strategies.phased_ttt import PhasedTTT, PhasedTTTConfig
from golf_lit.eval.strategies.phased_ttt_engine import PhasedRun, split_documents
from golf_lit.model.gpt import GPT

from .conftest import tiny_config

V = 64
# BigramHash and the base SmearGate read the previous position even across a BOS, so a packed row of several
# documents (the global phases' cu_seqlens path) is a different function from one row per document; the tests
# that compare packings or rank splits use a model without them (the LoRA scoring itself is per document).
DOC_LOCAL = dict(bigram_vocab_size=0, smear_gate=False)
CFG = PhasedTTTConfig(prefix_docs=4, num_phases=2, lora_rank=4, lora_alpha=8.0, chunk_size=8, eval_seq_len=32,
                      batch_size=2, global_chunk_tokens=64, global_seq_len=16, lora_lr=1e-2, global_lr=1e-2)
BOS_AT = [0, 50, 90, 200, 210, 400, 401, 500]


def make_model(**overrides) -> GPT:
    torch.manual_seed(0)
    model = GPT(tiny_config(**overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, V, (600,), generator=g)
    tokens[BOS_AT] = 1
    nbytes = torch.randint(0, 4, (599,), generator=g).double()
    return make_model(), tokens, nbytes


def byte_source(nbytes: torch.Tensor) -> SidecarBytes:
    """Per-target byte counts as a byte source (a sidecar charges stream token j + 1 to target j)."""
    return SidecarBytes(torch.cat([torch.zeros(1), nbytes]).to(torch.int32))


def phased(model, tokens, nbytes, cfg=CFG, **context):
    """This rank's ``"model"`` sums of ``--strategy phased_ttt`` (and the strategy, for its timings)."""
    strategy = PhasedTTT(cfg)
    return strategy.score(EvalContext(model, tokens, byte_source(nbytes), **context))["model"], strategy


def run(model, tokens, nbytes, cfg=CFG, **kw):
    trace, rec = PhaseTrace(), ScoreRecorder()
    sums, strategy = phased(model, tokens, nbytes, cfg, record=rec, trace=trace, **kw)
    return sums, trace, rec, strategy


def check(trace, tokens, cfg=CFG):
    starts, lengths = split_documents(tokens, 1)
    return trace.check(tokens.numel() - 1, starts, lengths, cfg.chunk_size)


# --- the TTT forward is the model's forward ------------------------------------------------------------------

MODEL_VARIANTS = {
    "all_on": {},
    "untied_head": {"tie_embeddings": False},
    "plain": {"value_residual": False, "gated_attention": False, "smear_gate": False, "bigram_vocab_size": 0,
              "xsa_last_n": 0, "unet_skips": False, "leaky_relu": False, "ln_scale": False},
    "three_layers_mha": {"num_layers": 3, "num_kv_heads": 4},
}


@pytest.mark.parametrize("variant", sorted(MODEL_VARIANTS))
def test_zero_adapters_give_the_models_logits(variant):
    model = make_model(**MODEL_VARIANTS[variant])
    x = torch.randint(0, V, (3, 20), generator=torch.Generator().manual_seed(1))
    ref = model(x)
    hooks = LoRAHooks(model, CFG.lora_rank, CFG.lora_alpha, CFG.lora_targets, batch=3)
    hooks.reset(0, 0, keep_a=False)
    assert set(k.split("_")[-1] for k in hooks.adapters) >= {"q", "k", "v", "attn", "mlp", "head"}
    with torch.no_grad():
        assert torch.equal(model(x), ref)  # B = 0: exactly the model
        for name, lora in hooks.adapters.items():  # and each adapter really acts, per document row
            lora.B[1].normal_()
            out = model(x)
            assert torch.equal(out[0], ref[0]) and torch.equal(out[2], ref[2]), name
            assert not torch.equal(out[1], ref[1]), name
            lora.B.zero_()
    hooks.remove()
    assert torch.equal(model(x), ref)


# --- every model the options can build: the record model, the top model, each top option alone -------------------

TOP_OPTIONS = {  # each leaderboard-top option on the 4-layer tiny model (tests/test_top_model.py's ALL_TOP)
    "looping": dict(num_loops=2, loop_start=1, loop_end=2),
    "skip_gates": dict(skip_gates_enabled=True),
    "parallel_residuals": dict(parallel_start_layer=3),
    "sparse_attn_gate": dict(attn_gate_variant="sparse", sparse_attn_gate_scale=0.5),
    "gated_bos_smear": dict(smear_gate_variant="gated_bos", gate_window=6),
    "no_yarn": dict(rope_yarn=False),
    "fused_ce": dict(fused_ce_enabled=True),
}
MATRIX = {
    "record": {},
    "top": {"xsa_last_n": 4, **{k: v for opts in TOP_OPTIONS.values() for k, v in opts.items()}},
    **{name: opts for name, opts in TOP_OPTIONS.items()},
}


def matrix_model(name: str) -> GPT:
    return make_model(num_layers=4, **MATRIX[name])


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_head_adapter_reads_the_final_hidden_state_before_the_softcap(name):
    """The head LoRA's term is ``lora(GPT.hidden(x))`` (the lane mean with parallel residuals) added to the raw
    logits before the softcap, on every model (the record's head LoRA, docs/top-stack.md §6.2)."""
    model = matrix_model(name)
    x = torch.randint(0, V, (2, 24), generator=torch.Generator().manual_seed(1))
    hooks = LoRAHooks(model, 4, 8.0, ("head",), batch=2)
    hooks.reset(0, 0, keep_a=False)
    head = hooks.adapters["head"]
    with torch.no_grad():
        head.B.normal_()
        hidden = model.hidden(x)
        weight = model.tok_emb.weight if model.lm_head is None else model.lm_head.weight
        raw = torch.nn.functional.linear(hidden, weight)
        cap = model.cfg.logit_softcap
        expected = cap * torch.tanh((raw + head(hidden)) / cap)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    hooks.remove()


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_phased_ttt_runs_on_every_model_and_at_zero_adapters_scores_the_plain_forward(name):
    """Phased TTT (LoRA on every target, head included) runs on each model; with nothing learned (lr 0: B stays 0,
    no phase moves the base) every position's NLL is the plain forward's over its document."""
    model = matrix_model(name)
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(2, V, (200,), generator=g)
    tokens[[0, 70, 71, 130]] = 1
    cfg = PhasedTTTConfig(prefix_docs=2, num_phases=1, lora_rank=4, lora_alpha=8.0, chunk_size=16, eval_seq_len=128,
                          batch_size=2, global_chunk_tokens=32, global_seq_len=32, lora_lr=0.0, weight_decay=0.0,
                          global_lr=0.0)
    rec = ScoreRecorder()
    sums, _ = phased(model, tokens, torch.ones(199), cfg, record=rec)
    assert sums.token_count == 199 and rec.check_once("model", 199) == []
    got = dict(zip(rec.positions("model").tolist(), np.concatenate([e.probs for e in rec.events]).tolist()))
    starts, lengths = split_documents(tokens, 1)
    with torch.no_grad():
        for a, n in zip(starts.tolist(), lengths.tolist()):
            logp = torch.log_softmax(model(tokens[None, a : a + n])[0].double(), dim=-1)
            ref = -logp.gather(1, tokens[a + 1 : a + n + 1, None])[:, 0]
            nll = -torch.log(torch.tensor([got[j] for j in range(a, a + n)], dtype=torch.float64))
            torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-5)


def test_split_documents_hand_worked():
    tokens = torch.tensor([1, 5, 6, 1, 7, 1, 1, 8])
    starts, lengths = split_documents(tokens, 1)
    assert starts.tolist() == [0, 3, 5, 6] and lengths.tolist() == [3, 2, 1, 1]  # next BOS is the last target
    starts, lengths = split_documents(torch.tensor([4, 5, 1, 6]), 1)
    assert starts.tolist() == [0, 2] and lengths.tolist() == [2, 1]


def test_config_boundaries_and_validation():
    assert PhasedTTTConfig().boundaries(50_000) == [833, 1666, 2500]
    assert PhasedTTTConfig(prefix_docs=2000, num_phases=1).boundaries(1500) == [1500]
    with pytest.raises(ValueError, match="phased_ttt.lora_targets"):
        PhasedTTTConfig(lora_targets=("q", "x"))
    with pytest.raises(ValueError, match="phased_ttt.eval_seq_len"):
        PhasedTTTConfig(chunk_size=64, eval_seq_len=32)


# --- an honest run ---------------------------------------------------------------------------------------------


def test_honest_run_scores_every_position_once_before_any_update(setup):
    model, tokens, nbytes = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sums, trace, rec, strategy = run(model, tokens, nbytes)
    timings = strategy.timings
    assert check(trace, tokens) == []
    assert rec.check_once("model", 599) == [] and rec.check_normalized("model") == []
    assert sums.token_count == 599 and sums.byte_count == float(nbytes.sum())
    assert [name for name, _ in timings] == ["score_1", "sgd_1", "score_2", "sgd_2", "score_suffix"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # artifact model untouched
    kinds = [k for k, _, _ in trace.events]
    assert kinds.count("lora") > 10 and kinds.count("global") > 2  # not vacuous
    # Phases train on exactly the first boundary_k documents of the longest-first order (lengths 190, 110, 99,
    # 99 | 50, 40, ...): phase 1 on docs 4 and 2, phase 2 on 4, 2, 6, 7 (last chunk of each phase skipped).
    starts, lengths = split_documents(tokens, 1)
    for phase, docs in ((1, [4, 2]), (2, [4, 2, 6, 7])):
        pos = torch.cat([p for k, d, p in trace.events if k == "global" and d == phase])
        doc_of = torch.repeat_interleave(torch.arange(len(starts)), lengths)
        assert set(doc_of[pos].tolist()) == set(docs)
        assert pos.numel() == (int(lengths[docs].sum()) - 1) // 64 * 64


def test_adaptation_changes_scores_and_helps_on_repetitive_text():
    motif = torch.randint(2, V, (12,), generator=torch.Generator().manual_seed(3))
    docs = [torch.cat([torch.tensor([1]), motif.repeat(n)]) for n in (20, 15, 10, 8)]
    tokens = torch.cat(docs + [torch.tensor([1])])
    nbytes = torch.ones(tokens.numel() - 1)
    model = make_model()
    cfg = PhasedTTTConfig(prefix_docs=2, num_phases=1, lora_rank=4, lora_alpha=8.0, chunk_size=16,
                          eval_seq_len=64, batch_size=2, global_chunk_tokens=64, global_seq_len=64, lora_lr=3e-2,
                          global_lr=3e-2)
    adapted, _ = phased(model, tokens, nbytes, cfg)
    frozen, _ = phased(model, tokens, nbytes, PhasedTTTConfig(
        **{**cfg.__dict__, "lora_lr": 0.0, "weight_decay": 0.0, "global_lr": 0.0}))
    assert adapted.nll_sum < frozen.nll_sum


# --- broken variants: the runtime guard stops each, and with the guards off the checker catches it --------------


def disable_guards(monkeypatch):
    for name in ("require_unscored", "require_all_scored", "require_not_last_chunk"):
        monkeypatch.setattr(invariants, name, lambda *a, **k: None)


def train_then_score(self, batch, opt):
    """Broken: the chunk's LoRA step happens before the chunk is scored."""
    nll = self.forward_nll(batch, score=False)
    self.lora_step(batch, nll, opt)
    self.forward_nll(batch, score=True)


def phase_with_an_unscored_doc(self, k):
    """Broken: the phase also takes the next document of the queue, not scored yet."""
    return self.order[: self.cfg.boundaries(len(self.order))[k] + 1]


def rescore_across_the_pause(self):
    """Broken: the segment after a pause starts one document early (re-scoring it with the updated model)."""
    d = len(self.order)
    cuts = [0, *self.cfg.boundaries(d), d]
    return [(max(a - 1, 0), b) for a, b in zip(cuts[:-1], cuts[1:])]


BROKEN = {
    "train_before_score": ("process_chunk", train_then_score, "invariant 3", "before they were scored"),
    "phase_with_unscored_doc": ("phase_docs", phase_with_an_unscored_doc, "invariant 3", "before it was fully"),
    "train_on_last_chunk": ("trains_on", lambda self, c, n: True, "invariant 3", "last chunk"),
    "rescore_across_pause": ("segments", rescore_across_the_pause, "invariant 4", "scored more than once"),
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_broken_variants_are_caught(setup, monkeypatch, broken):
    model, tokens, nbytes = setup
    attr, fn, guard_msg, check_msg = BROKEN[broken]
    monkeypatch.setattr(PhasedRun, attr, fn)
    with pytest.raises(InvariantError, match=guard_msg):
        run(model, tokens, nbytes)
    disable_guards(monkeypatch)
    _, trace, _, _ = run(model, tokens, nbytes)
    problems = check(trace, tokens)
    assert any(check_msg in p for p in problems), problems


# --- document masking through cu_seqlens ------------------------------------------------------------------------


class PackedModel(nn.Module):
    """A model with the new API: ``forward(input_ids, cu_seqlens=None)``, segments never attend to each other."""

    def __init__(self, inner: GPT) -> None:
        super().__init__()
        self.inner = inner
        self.cfg = inner.cfg
        self.calls = 0

    @property
    def blocks(self) -> nn.ModuleList:
        return self.inner.blocks

    def forward(self, input_ids, cu_seqlens=None):
        if cu_seqlens is None:
            return self.inner(input_ids)
        self.calls += 1
        cu = cu_seqlens.tolist()
        outs = [self.inner(input_ids[:, a:b]) for a, b in zip(cu[:-1], cu[1:])]
        return torch.cat(outs, dim=1)


def test_global_phase_uses_cu_seqlens_when_the_model_takes_it(setup):
    _, tokens, nbytes = setup
    model = make_model(**DOC_LOCAL)
    packed = PackedModel(model)
    a, _ = phased(model, tokens, nbytes)
    runner = PhasedRun(CFG, EvalContext(packed, tokens, byte_source(nbytes)))
    b = runner.run()["model"]
    assert runner.accepts_cu_seqlens and runner.model.calls > 2  # the packed path really ran
    assert a.token_count == b.token_count
    assert b.val_bpb == pytest.approx(a.val_bpb, rel=1e-5)  # same math, different summation order


# --- rank independence ------------------------------------------------------------------------------------------


def _rank_main(rank: int, world: int, init: str, q) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(2, V, (600,), generator=g)
        tokens[BOS_AT] = 1
        nbytes = torch.randint(0, 4, (599,), generator=g).double()
        cfg = PhasedTTTConfig(**{**CFG.__dict__, "warm_start_a": False})
        def all_reduce(t):
            t = t.clone()
            dist.all_reduce(t)
            return t

        sums, _ = phased(make_model(**DOC_LOCAL), tokens, nbytes, cfg, rank=rank, world_size=world,
                         all_reduce=all_reduce)
        t = torch.tensor([sums.nll_sum, sums.token_count, sums.byte_count], dtype=torch.float64)
        dist.all_reduce(t)
        if rank == 0:
            q.put(t.tolist())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_one_and_two_ranks_give_the_same_bpb(setup, tmp_path):
    _, tokens, nbytes = setup
    cfg = PhasedTTTConfig(**{**CFG.__dict__, "warm_start_a": False})
    one, _ = phased(make_model(**DOC_LOCAL), tokens, nbytes, cfg)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    mp.start_processes(_rank_main, args=(2, f"file://{tmp_path / 'pg'}", q), nprocs=2, join=True,
                       start_method="spawn")
    nll, count, nb = q.get(timeout=60)
    assert count == one.token_count and nb == one.byte_count
    # Only the global SGD's gradient sum is reassociated across ranks (fp32, ~1e-7 relative per step).
    assert nll / (math.log(2) * nb) == pytest.approx(one.val_bpb, rel=1e-5)


# --- compiled phased TTT: the warm-up compiles exactly what the run calls, on random tokens --------------------


def test_compile_warmup_calls_the_same_compiled_forward_on_random_tokens(tmp_path, monkeypatch):
    """``--phased_ttt.compile true``: one compiled forward, called by the evaluator's warm-up on random tokens and
    then by the timed run. (torch.compile itself is replaced by a recording wrapper: inductor on this CPU takes
    minutes; measured on the CPU, compiled and eager phased TTT agree to 5e-9 relative, docs/evaluation.md.)"""
    from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES, resolve
    from golf_lit.data.shards import load_validation_tokens
    from golf_lit.eval.cli import parse_config
    from golf_lit.eval.evaluator import Evaluator, RankEvaluation
    from golf_lit.eval.strategies import phased_ttt_engine
    from golf_lit.model.config import ModelConfig

    from .conftest import write_artifact

    calls: list[tuple[str, int, torch.Tensor]] = []
    compiled: list[nn.Module] = []
    phase = ["setup"]

    class Recording(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            calls.append((phase[0], id(self), x.detach().clone()))
            return self.model(x)

    def fake_compile(model):
        compiled.append(Recording(model))
        return compiled[-1]

    def warmup(self, ctx):
        phase[0] = "warmup"
        real_warmup(self, ctx)
        phase[0] = "run"

    real_warmup = RankEvaluation.warmup
    monkeypatch.setattr(phased_ttt_engine, "compile_forward", fake_compile)
    monkeypatch.setattr(RankEvaluation, "warmup", warmup)
    cfg = ModelConfig(num_layers=1, model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4, xsa_last_n=1,
                      bigram_vocab_size=0)
    artifact = write_artifact(tmp_path / "a", cfg)
    flags = ["--phased_ttt.prefix_docs", "2", "--phased_ttt.num_phases", "1", "--phased_ttt.lora_rank", "4",
             "--phased_ttt.chunk_size", "16", "--phased_ttt.eval_seq_len", "64", "--phased_ttt.batch_size", "2",
             "--phased_ttt.global_chunk_tokens", "128", "--phased_ttt.global_seq_len", "64"]
    argv = ["--artifact", str(artifact), "--val_files", SAMPLE_VAL_FILES, "--tokenizer", SAMPLE_TOKENIZER,
            "--accelerator", "cpu", "--progress", "false", "--sliding.seq_len", "64", "--max_tokens", "400",
            "--strategy", "phased_ttt", *flags]
    eager = Evaluator(parse_config(argv)).run()["results"][0]
    assert not compiled and not calls  # without the option nothing is compiled or warmed up
    out = Evaluator(parse_config([*argv, "--phased_ttt.compile", "true"])).run()
    assert len(compiled) == 1 and {i for _, i, _ in calls} == {id(compiled[0])}  # one function, used throughout
    assert [p for p in ("warmup", "run") if any(c[0] == p for c in calls)] == ["warmup", "run"]
    assert out["timings"]["phases"]["warmup"] > 0
    assert out["results"][0]["val_bpb"] == eager["val_bpb"]  # the warm-up left no trace in the scored run

    def grams(x: torch.Tensor) -> set[tuple[int, ...]]:
        return {g for row in x.tolist() for g in zip(row, row[1:], row[2:], row[3:]) if 0 not in g}

    val = grams(load_validation_tokens(resolve(SAMPLE_VAL_FILES), 64)[:401][None])
    for kind, share in (("warmup", lambda s: s < 0.02), ("run", lambda s: s > 0.98)):
        seen = set().union(*(grams(x) for p, _, x in calls if p == kind))
        assert share(len(seen & val) / len(seen)), kind  # warm-up windows are random tokens, never validation text
    warm_rows = {x.size(0) for p, _, x in calls if p == "warmup"}
    assert 1 in warm_rows and max(warm_rows) == 2  # a batch shrinking to one document, and a full batch
    assert max(x.size(1) for p, _, x in calls if p == "warmup") == 64  # full-width windows

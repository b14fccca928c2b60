"""Parameter groups, optimizer construction and OptimConfig validation (docs/record-stack.md §6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from golf_lit.model.config import ModelConfig
from golf_lit.optim.config import OptimConfig
from golf_lit.optim.muon import NS_COEFFICIENTS, POLAR_EXPRESS_COEFFICIENTS, Muon
from golf_lit.optim.param_groups import build_optimizers, build_param_groups

# (name, shape, group) for every record parameter name, plus control-named and bias-like extras
TABLE = [
    ("skip_weights", (5, 32), "scalar"),
    ("tok_emb.weight", (64, 32), "token"),
    ("bigram.scale", (), "scalar"),
    ("bigram.embed.weight", (16, 8), "token"),
    ("bigram.proj.weight", (32, 8), "matrix"),
    ("smear.gate", (32,), "scalar"),
    ("blocks.0.attn_scale", (32,), "scalar"),
    ("blocks.0.mlp_scale", (32,), "scalar"),
    ("blocks.0.resid_mix", (2, 32), "scalar"),
    ("blocks.0.attn.q_gain", (2,), "scalar"),
    ("blocks.1.attn.vr_lambda", (2,), "scalar"),
    ("blocks.0.attn.c_q.weight", (32, 32), "matrix"),
    ("blocks.0.attn.c_k.weight", (16, 32), "matrix"),
    ("blocks.0.attn.c_v.weight", (16, 32), "matrix"),
    ("blocks.0.attn.proj.weight", (32, 32), "matrix"),
    ("blocks.0.attn.attn_gate.weight", (2, 32), "scalar"),
    ("blocks.0.attn.attn_gate.bias", (2,), "scalar"),
    ("blocks.0.mlp.fc.weight", (96, 32), "matrix"),
    ("blocks.0.mlp.proj.weight", (32, 96), "matrix"),
    ("blocks.0.mlp.fc.bias", (96,), "scalar"),
    ("blocks.0.canon_a.weight", (4, 32), "scalar"),
    ("blocks.0.delta_gate.weight", (2, 32), "scalar"),
    ("lm_head.weight", (64, 32), "head"),
]

TINY = dict(
    num_layers=3,
    model_dim=32,
    num_heads=2,
    num_kv_heads=1,
    vocab_size=64,
    bigram_vocab_size=16,
    bigram_dim=8,
    rope_dims=8,
    xsa_last_n=3,
)


def named(rows):
    return [(name, nn.Parameter(torch.zeros(shape))) for name, shape, *_ in rows]


def group_of(groups):
    return {name: key for key, group in groups.items() for name in group.names}


def test_every_name_lands_in_its_group():
    groups = build_param_groups(named(TABLE), OptimConfig())
    assert group_of(groups) == {name: group for name, _, group in TABLE}
    assert groups["token"].names == ["tok_emb.weight", "bigram.embed.weight"]  # model order kept


def test_learning_rates_tied_and_untied():
    cfg = OptimConfig()
    untied = build_param_groups(named(TABLE), cfg)
    assert {k: g.lr for k, g in untied.items()} == {"token": 0.6, "head": 0.008, "matrix": 0.025, "scalar": 0.025}
    tied = build_param_groups(named([r for r in TABLE if r[0] != "lm_head.weight"]), cfg)
    assert set(tied) == {"token", "matrix", "scalar"} and tied["token"].lr == 0.035


@pytest.mark.parametrize(
    "name,shape,match",
    [
        ("encoder.weight", (4, 4), "not in any optimizer group.*encoder.weight"),
        ("blocks.0.conv.weight", (4, 4, 3), "not in any optimizer group.*blocks.0.conv.weight"),
        ("blocks.0.mlp.fc.weight", (96, 32), "listed twice"),
    ],
)
def test_leftover_or_repeated_names_raise(name, shape, match):
    with pytest.raises(ValueError, match=match):
        build_param_groups(named(TABLE) + [(name, nn.Parameter(torch.zeros(shape)))], OptimConfig())


def test_one_tensor_under_two_names_raises():
    shared = nn.Parameter(torch.zeros(64, 32))
    with pytest.raises(ValueError, match="'lm_head.weight' is the same tensor as 'tok_emb.weight'"):
        build_param_groups([("tok_emb.weight", shared), ("lm_head.weight", shared)], OptimConfig())


def gpt(cfg: ModelConfig) -> nn.Module:
    gpt_module = pytest.importorskip("golf_lit.model.gpt", reason="golf_lit.model.gpt not written yet")
    return gpt_module.GPT(cfg)


def test_record_model_groups():
    model = gpt(ModelConfig())
    groups = build_param_groups(model.named_parameters(), OptimConfig())
    sizes = {k: (len(g.params), sum(p.numel() for p in g.params)) for k, g in groups.items()}
    # 11 blocks x 6 matrices + bigram.proj; 11 x 6 controls + 10 vr_lambda + skip_weights, smear.gate, bigram.scale
    assert sizes["matrix"][0] == 67 and sizes["scalar"][0] == 79 and sizes["token"][0] == 2
    assert sum(n for _, n in sizes.values()) == sum(p.numel() for p in model.parameters()) == 27_137_221


@pytest.mark.parametrize("tie", [True, False])
def test_build_optimizers_on_tiny_gpt(tie):
    model = gpt(ModelConfig(**TINY, tie_embeddings=tie))
    optimizers = build_optimizers(model, OptimConfig())
    kinds = [type(o) for o in optimizers]
    assert kinds == [torch.optim.AdamW, Muon, torch.optim.AdamW] + ([] if tie else [torch.optim.AdamW])
    ids = [id(p) for o in optimizers for g in o.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    for opt in optimizers:
        for group in opt.param_groups:
            assert group["base_lr"] == group["lr"] and group["weight_decay"] == 0.04
    token, muon, scalar = optimizers[:3]
    assert token.param_groups[0]["lr"] == (0.035 if tie else 0.6)
    assert token.param_groups[0]["betas"] == (0.9, 0.95) and token.param_groups[0]["eps"] == 1e-8
    assert not token.param_groups[0]["fused"]  # CPU
    m = muon.param_groups[0]
    assert (m["lr"], m["momentum"], m["nesterov"], m["backend_steps"]) == (0.025, 0.99, True, 5)
    assert scalar.param_groups[0]["lr"] == 0.025
    if not tie:
        assert optimizers[3].param_groups[0]["lr"] == 0.008


def test_one_training_step_moves_every_group():
    model = gpt(ModelConfig(**TINY))
    optimizers = build_optimizers(model, OptimConfig())
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    before = {id(p): p.detach().clone() for p in model.parameters()}
    logits = model(ids[:, :-1])
    nn.functional.cross_entropy(logits.reshape(-1, 64).float(), ids[:, 1:].reshape(-1)).backward()
    for opt in optimizers:
        opt.step()
    moved = {id(p): not torch.equal(before[id(p)], p) for p in model.parameters()}
    # zero-initialised tensors whose gradient is also zero (e.g. the bigram table) cannot move on step 1
    stuck = [n for n, p in model.named_parameters() if p.grad.abs().sum() > 0 and not moved[id(p)]]
    assert not stuck
    for opt in optimizers:
        assert any(moved[id(p)] for p in opt.param_groups[0]["params"])


@pytest.mark.parametrize(
    "key,value",
    [
        ("matrix_lr", 0.0),
        ("muon_momentum", 1.0),
        ("beta2", -0.1),
        ("muon_backend_steps", 0),
        ("adam_wd", -1.0),
        ("muon_momentum_warmup_steps", -1),
        ("adam_eps", 0.0),
        ("grad_clip_norm", -0.3),
    ],
)
def test_optim_config_rejects_bad_values_naming_key(key, value):
    with pytest.raises(ValueError, match=rf"optim\.{key}"):
        OptimConfig(**{key: value})


def test_optim_config_record_defaults():
    cfg = OptimConfig()
    assert (cfg.matrix_lr, cfg.scalar_lr, cfg.tied_embed_lr, cfg.muon_momentum) == (0.025, 0.025, 0.035, 0.99)
    assert (cfg.muon_momentum_warmup_start, cfg.muon_momentum_warmup_steps, cfg.muon_wd) == (0.92, 1500, 0.04)
    assert (cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.grad_clip_norm, cfg.muon_shard_ns) == (0.9, 0.95, 1e-8, 0.3, False)


# --- Leaderboard-top options (docs/top-stack.md §4.1-4.2) -------------------------------------------------


def test_top_options_reach_their_groups_only():
    model = gpt(ModelConfig(**TINY))
    cfg = OptimConfig(
        adam_wd=0.02,
        embed_wd=0.085,
        beta2=0.99,
        embed_beta2=0.98,
        scalar_beta2=0.97,
        ns_coefficients="polar_express",
        muon_row_normalize=True,
    )
    token, muon, scalar = build_optimizers(model, cfg)
    assert (token.param_groups[0]["weight_decay"], token.param_groups[0]["betas"]) == (0.085, (0.9, 0.98))
    assert (scalar.param_groups[0]["weight_decay"], scalar.param_groups[0]["betas"]) == (0.02, (0.9, 0.97))
    m = muon.param_groups[0]
    assert m["ns_coefficients"] == POLAR_EXPRESS_COEFFICIENTS and m["row_normalize"] is True
    ids = [id(p) for o in (token, muon, scalar) for g in o.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_untied_head_keeps_adam_wd_and_beta2():
    model = gpt(ModelConfig(**TINY, tie_embeddings=False))
    head = build_optimizers(model, OptimConfig(embed_wd=0.5, embed_beta2=0.5, scalar_beta2=0.6))[3]
    assert (head.param_groups[0]["weight_decay"], head.param_groups[0]["betas"]) == (0.04, (0.9, 0.95))


def test_top_options_unset_give_the_record_settings():
    cfg = OptimConfig()
    assert (cfg.ns_coefficients, cfg.muon_row_normalize) == ("fixed", False)
    assert (cfg.embed_wd, cfg.embed_beta2, cfg.scalar_beta2) == (None, None, None)
    token, muon, scalar = build_optimizers(gpt(ModelConfig(**TINY)), cfg)
    for opt in (token, scalar):
        assert (opt.param_groups[0]["weight_decay"], opt.param_groups[0]["betas"]) == (0.04, (0.9, 0.95))
    assert muon.param_groups[0]["ns_coefficients"] == NS_COEFFICIENTS
    assert muon.param_groups[0]["row_normalize"] is False


@pytest.mark.parametrize(
    "key,value",
    [("ns_coefficients", "quintic"), ("embed_wd", -0.1), ("embed_beta2", 1.0), ("scalar_beta2", -0.5)],
)
def test_optim_config_rejects_bad_top_values_naming_key(key, value):
    with pytest.raises(ValueError, match=rf"optim\.{key}"):
        OptimConfig(**{key: value})


def test_top_options_at_neutral_values_equal_the_defaults():
    def settings(cfg):
        torch.manual_seed(0)
        opts = build_optimizers(gpt(ModelConfig(**TINY)), cfg)
        return [{k: v for k, v in o.param_groups[0].items() if k != "params"} for o in opts]

    neutral = OptimConfig(embed_wd=0.04, embed_beta2=0.95, scalar_beta2=0.95, ns_coefficients="fixed")
    assert settings(neutral) == settings(OptimConfig())
    assert settings(OptimConfig(embed_wd=0.0)) != settings(OptimConfig())  # the comparison can fail

"""Fuzz the readers of files a user is handed (issue #22): a few hundred seeded mutations of a valid artifact (both
the seed's zstd frame and the pergroup container) and of a valid training checkpoint.

Every outcome must be a clean refusal (the documented error type, a one-line message naming the file) or a model
whose score is finite, and equal to the unmutated model's when the mutation decodes to the same tensors (it hit
bytes the reader ignores, such as the zip archive's alignment padding).
"""

from __future__ import annotations

import copy
import io
import random
from pathlib import Path

import lightning
import pytest
import torch

from golf_lit.artifact import ArtifactError, packing
from golf_lit.artifact.compression import compress, decompress
from golf_lit.artifact.container import deserialize, serialize
from golf_lit.artifact.records import load_record_checkpoint
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.model.size import check_model_size

from .test_artifact_hostile import MODEL_Q, base_wm, blob_of

pytestmark = pytest.mark.slow

TOKENS = torch.randint(0, 1024, (1, 48), generator=torch.Generator().manual_seed(0))
DTYPES = [torch.int64, torch.bool, torch.complex64, torch.float64, torch.int16, torch.uint8, torch.float16,
          torch.int8]  # fmt: skip


def score(model: GPT) -> float:
    """Mean next-token NLL of TOKENS (a full normalized distribution over the vocabulary)."""
    with torch.no_grad():
        logits = model(TOKENS[:, :-1]).float()
    logp = torch.log_softmax(logits[0], dim=-1)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(logp.shape[0]), atol=1e-4)  # normalized, when finite
    return float(-logp.gather(1, TOKENS[0, 1:, None]).mean())


def assert_clean_refusal(exc: BaseException, path: Path) -> None:
    msg = str(exc)
    assert "\n" not in msg.strip(), msg
    assert str(path) in msg, msg


# --- mutations ---------------------------------------------------------------------------------------------------


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    op = rng.choice(["flip", "flip", "truncate", "insert", "overwrite"])
    if op == "flip":
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        del b[rng.randrange(len(b)) :]
    elif op == "insert":
        at = rng.randrange(len(b) + 1)
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        at = rng.randrange(len(b))
        b[at : at + rng.randint(1, 64)] = bytes([rng.choice([0, 255])]) * rng.randint(1, 64)
    return bytes(b)


def edit_tensors(rng: random.Random, w: dict, m: dict) -> None:
    """One structural edit of (w, m), the fields a hand-edited pickle can change."""
    key = rng.choice(sorted(w))
    t = w[key]
    op = rng.choice(["dtype", "nonfinite", "shape", "drop_w", "drop_m", "meta", "extra", "scale_big"])
    if op == "dtype":
        w[key] = t.to(rng.choice(DTYPES))
    elif op == "nonfinite" and t.is_floating_point() and t.numel():
        t = t.clone()
        t.view(-1)[rng.randrange(t.numel())] = rng.choice([float("nan"), float("inf"), -float("inf")])
        w[key] = t
    elif op == "shape":
        w[key] = rng.choice([t.reshape(-1), t.reshape(1, -1), t.T.contiguous() if t.ndim == 2 else t[None],
                             t[: max(1, t.shape[0] // 2)] if t.ndim else t.reshape(1)])  # fmt: skip
    elif op == "drop_w":
        del w[key]
    elif op == "drop_m":
        del m[rng.choice(sorted(m))]
    elif op == "meta":
        name = rng.choice(sorted(m))
        m[name] = rng.choice(["int6", "passthrough", "passthrough_ctrl", 3, None, [1], {"type": "int6"},
                              {"type": "int4"}, {"type": "int8", "lqer": "fp32"}, {"type": "int6", "lqer": "asym"},
                              {"type": "int6", "lqer": None}])  # fmt: skip
    elif op == "extra":
        w[rng.choice(["junk", f"{key}.lqer_A", "blocks.9.x.q"])] = torch.zeros(rng.choice([(0,), (3, 4), (1,)]))
        m.setdefault("junk", "passthrough")
    elif op == "scale_big" and key.endswith(".scale"):
        w[key] = torch.full_like(t, 6.0e4)


def edit_manifest(rng: random.Random, blob: bytes) -> bytes:
    """One edit of the pergroup container's group manifest (stream 0 re-encoded, CRCs rewritten)."""
    _, streams = packing.read_container(blob, "x")
    w, m = deserialize(packing.decode_stream(streams[0], "x", "s", 1 << 28))
    groups = m["__groups__"]
    group = rng.choice(groups)
    entry = rng.choice(group[1])
    op = rng.choice(["rows", "cols", "swap", "permuted", "key", "drop", "dup", "type"])
    if op in ("rows", "cols"):
        entry[1 if op == "rows" else 2] += rng.choice([-1, 1, 1000])
    elif op == "swap":
        entry[1], entry[2] = entry[2], entry[1]
    elif op == "permuted":
        entry[3] = not entry[3]
    elif op == "key":
        entry[0] = rng.choice(["tok_emb.weight.q", "nope.q", "blocks.0.mlp.proj.weight.q", 7])
    elif op == "drop":
        group[1].remove(entry)
    elif op == "dup":
        group[1].append(list(entry))
    else:
        entry[rng.randrange(4)] = rng.choice(["1", 1.5, None, [1], True])
    streams[0] = ("zstd", 0, compress(serialize(w, m), 3))  # zstd: brotli-11 would dominate the run time
    return packing.write_container("pergroup", streams)


# --- artifacts ---------------------------------------------------------------------------------------------------


def test_fuzzed_artifacts_are_refused_cleanly_or_scored_correctly(tmp_path):
    template = check_model_size(MODEL_Q, "test")
    w0, m0 = base_wm()
    blobs = {"zstd": blob_of(w0, m0, "zstd"), "pergroup": blob_of(w0, m0, "pergroup")}
    payload = decompress(blobs["zstd"])
    model = GPT(MODEL_Q)
    path = tmp_path / "final_model.int6.ptz"
    path.write_bytes(blobs["zstd"])
    ref = load_record_checkpoint(path, template)
    model.load_state_dict(ref, strict=True)
    ref_score = score(model)
    rng = random.Random(1234)
    outcomes = {"refused": 0, "same": 0, "changed": 0}
    for i in range(360):
        kind = ("bytes-zstd", "bytes-pergroup", "payload", "tensors", "tensors-pergroup", "manifest")[i % 6]
        if kind.startswith("bytes"):
            data = mutate_bytes(rng, blobs[kind.split("-")[1]])
        elif kind == "payload":
            data = compress(mutate_bytes(rng, payload), 3)
        elif kind == "manifest":
            data = edit_manifest(rng, blobs["pergroup"])
        else:
            w, m = base_wm()
            edit_tensors(rng, w, m)
            if kind == "tensors":
                data = blob_of(w, m, "zstd")
            else:  # pergroup with the code matrices kept as they are: re-encode stream 0 only
                _, streams = packing.read_container(blobs["pergroup"], "x")
                hw, hm = deserialize(packing.decode_stream(streams[0], "x", "s", 1 << 28))
                groups = hm.pop("__groups__")
                grouped = {k for _, entries in groups for k, *_ in entries}
                edit_tensors(rng, hw, hm)
                hw = {k: v for k, v in hw.items() if k not in grouped}
                streams[0] = ("zstd", 0, compress(serialize(hw, {**hm, "__groups__": groups}), 3))
                data = packing.write_container("pergroup", streams)
        path.write_bytes(data)
        try:
            sd = load_record_checkpoint(path, template)
        except ArtifactError as exc:
            assert_clean_refusal(exc, path)
            outcomes["refused"] += 1
            continue
        model.load_state_dict(sd, strict=True)  # what the loader returns always loads strictly
        got = score(model)
        same = all(torch.equal(sd[k], ref[k]) for k in ref)
        if same:
            assert got == ref_score, (i, kind)
            outcomes["same"] += 1
        else:
            assert torch.isfinite(torch.tensor(got)), (i, kind)
            outcomes["changed"] += 1
    assert outcomes["refused"] > 200 and outcomes["same"] + outcomes["changed"] > 0, outcomes


# --- checkpoints -------------------------------------------------------------------------------------------------

MODEL_C = ModelConfig(num_layers=1, model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4, xsa_last_n=1,
                      bigram_vocab_size=0)  # fmt: skip


def _checkpoint() -> dict:
    from golf_lit.train.module import GolfLM

    torch.manual_seed(0)
    module = GolfLM(**MODEL_C.to_dict())
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "callbacks": {"EMA": {"shadow": {k: p.detach().clone() for k, p in module.gpt.named_parameters()}}},
    }


HP_VALUES = {
    "num_layers": [1_000_000, 0, -1, 2.5, "two", None, 2],
    "model_dim": [1 << 30, 33, 64, "32", 0],
    "vocab_size": [10**9, 512, 0],
    "num_heads": [3, 8, 0],
    "mlp_mult": [float("nan"), float("inf"), 1e300, -1.0, 4.0],
    "rope_base": [float("nan"), -1.0, 0.0, 500.0],
    "logit_softcap": [float("inf"), 0.0, 10.0],
    "tie_embeddings": [False, "yes"],
    "num_loops": [10**6, 1],
    "optim": [{"class_path": "os.system"}, "adam", None, {"matrix_lr": "fast"}],
    "compile": ["yes"],
    "model": [{"num_layers": 10**6}],
}


def edit_checkpoint(rng: random.Random, ckpt: dict) -> None:
    op = rng.choice(["hp", "hp", "weights", "ema", "drop"])
    if op == "hp":
        key = rng.choice(sorted(HP_VALUES))
        ckpt["hyper_parameters"][key] = rng.choice(HP_VALUES[key])
    elif op in ("weights", "ema"):
        target = ckpt["state_dict"] if op == "weights" else ckpt["callbacks"]["EMA"]["shadow"]
        w, m = target, dict.fromkeys(target, "passthrough")  # meta edits do nothing here
        edit_tensors(rng, w, m)
    else:
        del ckpt[rng.choice(["state_dict", "hyper_parameters", "callbacks"])]


def test_fuzzed_checkpoints_are_refused_cleanly_or_rebuilt_correctly(tmp_path):
    from golf_lit.train.checkpoint import load_checkpoint_model

    base = _checkpoint()
    buf = io.BytesIO()
    torch.save(base, buf)
    raw = buf.getvalue()
    path = tmp_path / "last.ckpt"
    path.write_bytes(raw)
    ref_model, _ = load_checkpoint_model(path)
    ref_state = {k: v.clone() for k, v in ref_model.state_dict().items()}
    ref_score = score(ref_model)
    rng = random.Random(4321)
    outcomes = {"refused": 0, "same": 0, "changed": 0}
    for i in range(150):
        if i % 2:
            data = mutate_bytes(rng, raw)
        else:
            ckpt = copy.deepcopy(base)
            edit_checkpoint(rng, ckpt)
            buf = io.BytesIO()
            torch.save(ckpt, buf)
            data = buf.getvalue()
        path.write_bytes(data)
        try:
            model, _ = load_checkpoint_model(path)
        except ValueError as exc:  # CheckpointError is one
            assert_clean_refusal(exc, path)
            outcomes["refused"] += 1
            continue
        got = score(model)
        state = model.state_dict()
        same = state.keys() == ref_state.keys() and all(torch.equal(state[k], ref_state[k]) for k in ref_state)
        if same and model.cfg == ref_model.cfg:
            assert got == ref_score, i
            outcomes["same"] += 1
        else:
            assert torch.isfinite(torch.tensor(got)), i
            outcomes["changed"] += 1
    assert outcomes["refused"] > 60 and outcomes["same"] + outcomes["changed"] > 0, outcomes

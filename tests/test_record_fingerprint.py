"""With every option at its default the record model keeps its parameter names, init values and logits.

``tests/data/record_fingerprint.json`` was computed by this file (``python -m tests.test_record_fingerprint``)
from the record ``ModelConfig()`` before the leaderboard-top options were added; the test recomputes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT

FINGERPRINT = Path(__file__).parent / "data" / "record_fingerprint.json"


def compute_fingerprint() -> dict:
    """Names, shapes and init sums of GPT(ModelConfig()) under seed 0; logits after a seeded perturbation."""
    torch.manual_seed(0)
    model = GPT(ModelConfig())
    params = {n: {"shape": list(p.shape), "sum": float(p.double().sum())} for n, p in model.state_dict().items()}
    torch.manual_seed(1)  # every parameter (zero-init ones included) gets generic values so every trick is active
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.5 if p.ndim < 2 else 0.2))
    ids = (torch.arange(2 * 32).reshape(2, 32) * 37 + 11) % 1024  # fixed input, no RNG
    with torch.no_grad():
        logits = model(ids).double()
    return {
        "params": params,
        "logits_sum": float(logits.sum()),
        "logits_sq_sum": float(logits.square().sum()),
        "logits_head": logits[:, :, :4].tolist(),
    }


def test_record_model_matches_stored_fingerprint():
    stored = json.loads(FINGERPRINT.read_text())
    now = compute_fingerprint()
    assert list(now["params"]) == list(stored["params"])  # names and state_dict order
    for name, ref in stored["params"].items():
        assert now["params"][name]["shape"] == ref["shape"], name
        # init sums: orthogonal init goes through LAPACK, so allow fp32 reassociation (sums of <= 800k values)
        assert abs(now["params"][name]["sum"] - ref["sum"]) <= 1e-3 + 1e-5 * abs(ref["sum"]), name
    # logits are bounded by the softcap (30); an 11-layer fp32 forward agrees to ~1e-5 across BLAS builds,
    # while any change of the function moves them by O(0.1)
    torch.testing.assert_close(
        torch.tensor(now["logits_head"]), torch.tensor(stored["logits_head"]), rtol=0, atol=2e-3
    )
    n = 2 * 32 * 1024
    assert abs(now["logits_sum"] - stored["logits_sum"]) <= 2e-3 * n**0.5
    assert abs(now["logits_sq_sum"] - stored["logits_sq_sum"]) <= 1e-4 * abs(stored["logits_sq_sum"])


if __name__ == "__main__":
    FINGERPRINT.write_text(json.dumps({"provenance": "tests/test_record_fingerprint.py on the pre-h-top record model",
                                       **compute_fingerprint()}, indent=1) + "\n")
    print(f"wrote {FINGERPRINT}")

"""Muon: Newton-Schulz invariants, the step against the docs/record-stack.md §6.1 formula, and why not
torch.optim.Muon."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from golf_lit.optim.muon import (
    NS_COEFFICIENTS,
    POLAR_EXPRESS_COEFFICIENTS,
    Muon,
    row_normalize,
    zeropower_newton_schulz,
)

RAMP = (0.92, 0.955, 0.99)  # the record's momentum at steps 0, 750 and 1500


def reference_ns(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """docs/record-stack.md §6.1 step 3 written out plainly (bf16)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    x = x / (x.norm() + 1e-7)
    if g.size(0) > g.size(1):
        x = x.T
    for _ in range(steps):
        A = x @ x.T
        B = b * A + c * A @ A
        x = a * x + B @ x
    return x.T if g.size(0) > g.size(1) else x


def reference_steps(w0, grads, momenta, lr, wd):
    """docs/record-stack.md §6.1 steps 1-5 for a sequence of gradients; returns the weights after each step."""
    w, buf, out = w0.clone(), torch.zeros_like(w0), []
    for g, mu in zip(grads, momenta):
        buf = mu * buf + g
        x = reference_ns(g + mu * buf) * math.sqrt(max(1, w.size(0) / w.size(1)))
        w = w * (1 - lr * wd)
        w = w - lr * x.float()
        out.append(w.clone())
    return out


def run_optimizer(make, w0, grads, momenta):
    """Weights after each step of an optimizer built by ``make(params)``, momentum set before each step."""
    w = torch.nn.Parameter(w0.clone())
    opt = make([w])
    out = []
    for g, mu in zip(grads, momenta):
        opt.param_groups[0]["momentum"] = mu
        w.grad = g.clone()
        opt.step()
        out.append(w.detach().clone())
    return out


def problem(shape, n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen), [torch.randn(*shape, generator=gen) for _ in range(n)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("shape", [(32, 80), (80, 32), (48, 128), (128, 48), (30, 50)])
def test_newton_schulz_singular_values_in_band(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    sv_in = torch.linalg.svdvals(g)
    assert sv_in.max() / sv_in.min() > 2  # the input is far from orthogonal
    sv = torch.linalg.svdvals(zeropower_newton_schulz(g).float())
    # measured over many random rectangular matrices: [0.67, 1.15] for 5 steps with these coefficients
    assert 0.6 < sv.min() and sv.max() < 1.2, (sv.min(), sv.max())


def quintic_reference() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed 40x24 fp64 matrix G and the independent fp64 reference of 5 Newton-Schulz steps on it:
    U p(p(p(p(p(S/||G||_F))))) V^T with p(s) = a s + b s^3 + c s^5."""
    g = torch.randn(40, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    s = s / g.norm()
    a, b, c = NS_COEFFICIENTS
    for _ in range(5):
        s = a * s + b * s**3 + c * s**5
    return g, u @ torch.diag(s) @ vh


def test_newton_schulz_is_the_quintic_on_singular_values():
    g, expected = quintic_reference()
    out = zeropower_newton_schulz(g)
    assert out.dtype == torch.bfloat16 and out.shape == g.shape
    assert rel_err(out.double(), expected) < 0.06  # bf16 rounding over 5 iterations is ~3.5%


def test_newton_schulz_scale_invariant_and_transpose_equivariant():
    g = torch.randn(24, 40, generator=torch.Generator().manual_seed(3))
    base = zeropower_newton_schulz(g).float()
    torch.testing.assert_close(zeropower_newton_schulz(2.0 * g).float(), base)  # power-of-2 scale: exact in bf16
    assert rel_err(zeropower_newton_schulz(g.T).float().T, base) < 0.02


def test_newton_schulz_rejects_non_matrix():
    with pytest.raises(ValueError, match="2-D"):
        zeropower_newton_schulz(torch.randn(3, 4, 5))


@pytest.mark.parametrize("shape", [(48, 24), (24, 48)])
def test_step_equals_spec_formula_under_momentum_ramp(shape):
    w0, grads = problem(shape)
    expected = reference_steps(w0, grads, RAMP, lr=0.025, wd=0.04)
    got = run_optimizer(lambda p: Muon(p, lr=0.025, weight_decay=0.04), w0, grads, RAMP)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-6)


def test_momentum_buffer_after_two_steps():
    w0, (g1, g2) = problem((16, 8), n=2)
    w = torch.nn.Parameter(w0.clone())
    opt = Muon([w], lr=0.01, momentum=0.9)
    for g in (g1, g2):
        w.grad = g.clone()
        opt.step()
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], 0.9 * g1 + g2)


def test_weight_decay_is_decoupled():
    w0, grads = problem((16, 8), n=1)
    lr, wd = 0.1, 0.5
    # zero gradient: the update is exactly 0 and only the decay acts
    only_decay = run_optimizer(lambda p: Muon(p, lr=lr, weight_decay=wd), w0, [torch.zeros_like(w0)], [0.9])[0]
    torch.testing.assert_close(only_decay, w0 * (1 - lr * wd), rtol=0, atol=0)
    # the decay does not enter the momentum/orthogonalized update: runs with and without it differ by lr*wd*W0
    with_wd = run_optimizer(lambda p: Muon(p, lr=lr, weight_decay=wd), w0, grads, [0.9])[0]
    without = run_optimizer(lambda p: Muon(p, lr=lr, weight_decay=0.0), w0, grads, [0.9])[0]
    torch.testing.assert_close(without - with_wd, lr * wd * w0, rtol=1e-5, atol=1e-6)


def test_tall_matrices_get_sqrt_aspect_scale():
    _, (g,) = problem((64, 16), n=1)
    zeros = torch.zeros(64, 16)
    tall = -run_optimizer(lambda p: Muon(p, lr=1.0), zeros, [g], [0.9])[0]
    wide = -run_optimizer(lambda p: Muon(p, lr=1.0), zeros.T.contiguous(), [g.T.contiguous()], [0.9])[0]
    torch.testing.assert_close(tall, 2.0 * wide.T, rtol=0.03, atol=0.03)  # sqrt(64/16) = 2, wide gets 1
    sv_tall, sv_wide = torch.linalg.svdvals(tall), torch.linalg.svdvals(wide)
    assert 1.2 < sv_tall.min() and sv_tall.max() < 2.4
    assert 0.6 < sv_wide.min() and sv_wide.max() < 1.2


def test_rejects_non_matrix_params_and_bad_settings():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(4))])
    with pytest.raises(ValueError, match="momentum"):
        Muon([torch.nn.Parameter(torch.zeros(4, 4))], momentum=1.0)


def test_params_without_grad_are_skipped():
    a, b = torch.nn.Parameter(torch.ones(4, 4)), torch.nn.Parameter(torch.ones(4, 4))
    a.grad = torch.randn(4, 4)
    Muon([a, b], lr=0.1, weight_decay=0.5).step()
    assert torch.equal(b, torch.ones(4, 4)) and not torch.equal(a, torch.ones(4, 4))
    assert b not in Muon([b]).state


# torch.optim.Muon keeps buf = mu*buf + (1-mu)*g and feeds (1-mu)*g + mu*buf to Newton-Schulz. At a fixed mu
# that is (1-mu) times docs/record-stack.md §6.1's input, which the Frobenius normalization removes; when mu changes
# between
# steps (the record's ramp) the two weight past gradients differently. These two tests record that finding.
requires_torch_muon = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon not available")


def torch_muon(params):
    return torch.optim.Muon(
        params,
        lr=0.025,
        weight_decay=0.04,
        momentum=0.95,
        nesterov=True,
        ns_steps=5,
        ns_coefficients=NS_COEFFICIENTS,
        eps=1e-7,
        adjust_lr_fn="original",
    )


@requires_torch_muon
def test_torch_muon_matches_spec_at_constant_momentum():
    w0, grads = problem((48, 24))
    momenta = (0.95,) * 3
    expected = reference_steps(w0, grads, momenta, lr=0.025, wd=0.04)
    for got, exp in zip(run_optimizer(torch_muon, w0, grads, momenta), expected):
        # different bf16 rounding of a rescaled input moves NS output by ~3-4%; allow 8% of the update
        assert rel_err(got - w0, exp - w0) < 0.08


@requires_torch_muon
def test_torch_muon_departs_from_spec_under_momentum_ramp():
    w0, grads = problem((48, 24))
    expected = reference_steps(w0, grads, RAMP, lr=0.025, wd=0.04)
    got = run_optimizer(torch_muon, w0, grads, RAMP)
    assert rel_err(got[0] - w0, expected[0] - w0) < 0.08  # first step: buffer was zero, still equivalent
    assert rel_err(got[2] - got[1], expected[2] - expected[1]) > 0.25  # third step: far beyond bf16 noise


def _sharded_worker(rank: int, world: int, tmp: str, shapes) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    try:
        gen = torch.Generator().manual_seed(5)
        params = [torch.nn.Parameter(torch.randn(*s, generator=gen)) for s in shapes]
        opt = Muon(params, lr=0.05, weight_decay=0.04, shard_ns=True)
        for _ in range(2):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        result = ([p.detach() for p in params], [opt.state[p]["momentum_buffer"] for p in params])
        torch.save(result, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sharded_step_equals_single_process(tmp_path):
    shapes = [(16, 8), (8, 16), (12, 12)]
    mp.start_processes(_sharded_worker, args=(2, str(tmp_path), shapes), nprocs=2, start_method="spawn")
    gen = torch.Generator().manual_seed(5)
    params = [torch.nn.Parameter(torch.randn(*s, generator=gen)) for s in shapes]
    opt = Muon(params, lr=0.05, weight_decay=0.04)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    for rank in (0, 1):
        weights, bufs = torch.load(tmp_path / f"rank{rank}.pt")
        for p, w, buf in zip(params, weights, bufs):
            torch.testing.assert_close(w, p.detach(), rtol=0, atol=0)
            torch.testing.assert_close(buf, opt.state[p]["momentum_buffer"], rtol=0, atol=0)


# --- Leaderboard-top options (docs/top-stack.md §4.2): Polar Express coefficients and MuonEq-R ---------------

PE = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def quintic_by_hand(s: float, triples) -> float:
    """One singular value through X <- aX + (bA + cA^2)X, i.e. s <- a s + b s^3 + c s^5, in Python floats."""
    for a, b, c in triples:
        s = a * s + b * s**3 + c * s**5
    return s


def test_polar_express_constants_are_the_records():
    assert [tuple(t) for t in POLAR_EXPRESS_COEFFICIENTS] == PE


def test_polar_express_triples_are_applied_in_order():
    # diag(3, 4) has ||G||_F = 5, so X0 = diag(3/(5+eps), 4/(5+eps)) and every iterate stays diagonal: each
    # diagonal entry follows the scalar quintic of its own (a_k, b_k, c_k), which Python floats compute exactly
    # enough for a 1e-12 comparison with the float64 matrix path.
    g = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    out = zeropower_newton_schulz(g, steps=5, coefficients=POLAR_EXPRESS_COEFFICIENTS, dtype=torch.float64)
    assert out.dtype == torch.float64
    norm = 5.0 + 1e-7
    expected = [quintic_by_hand(3.0 / norm, PE), quintic_by_hand(4.0 / norm, PE)]
    torch.testing.assert_close(out.diagonal(), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    assert out[0, 1] == 0 and out[1, 0] == 0
    # The order matters: reversed or repeated-first-triple schedules land far from the in-order iterate.
    for wrong in (PE[::-1], [PE[0]] * 5, [PE[-1]] * 5):
        assert abs(quintic_by_hand(3.0 / norm, wrong) - expected[0]) > 1e-2


def test_polar_express_on_a_full_3x3_matches_the_singular_value_recursion():
    g = torch.tensor([[2.0, -1.0, 0.5], [0.3, 1.5, -2.0], [1.0, 0.0, 0.25]], dtype=torch.float64)
    u, s, vh = torch.linalg.svd(g)
    s_out = [quintic_by_hand(float(v) / (float(g.norm()) + 1e-7), PE) for v in s]
    expected = u @ torch.diag(torch.tensor(s_out, dtype=torch.float64)) @ vh
    out = zeropower_newton_schulz(g, coefficients=POLAR_EXPRESS_COEFFICIENTS, dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_more_steps_than_triples_repeat_the_last_triple():
    g = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    out = zeropower_newton_schulz(g, steps=7, coefficients=POLAR_EXPRESS_COEFFICIENTS, dtype=torch.float64)
    expected = quintic_by_hand(3.0 / (5.0 + 1e-7), PE + [PE[-1], PE[-1]])
    assert out[0, 0].item() == pytest.approx(expected, rel=1e-12)
    three = zeropower_newton_schulz(g, steps=3, coefficients=POLAR_EXPRESS_COEFFICIENTS, dtype=torch.float64)
    assert three[0, 0].item() == pytest.approx(quintic_by_hand(3.0 / (5.0 + 1e-7), PE[:3]), rel=1e-12)


@pytest.mark.parametrize("shape", [(32, 80), (80, 32), (30, 50)])
def test_polar_express_singular_values_in_band_bf16(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    sv = torch.linalg.svdvals(zeropower_newton_schulz(g, coefficients=POLAR_EXPRESS_COEFFICIENTS).float())
    # measured over many random matrices in bf16: [0.85, 1.15] (the fixed triple gives [0.67, 1.14])
    assert 0.8 < sv.min() and sv.max() < 1.2, (sv.min(), sv.max())


def test_muon_polar_express_step_uses_those_coefficients():
    w0, (g,) = problem((24, 48), n=1)
    got = run_optimizer(lambda p: Muon(p, lr=0.1, ns_coefficients="polar_express"), w0, [g], [0.9])[0]
    x = zeropower_newton_schulz(g.add(g, alpha=0.9), coefficients=POLAR_EXPRESS_COEFFICIENTS)  # Nesterov, buf = g
    torch.testing.assert_close(got, w0.add(x.float(), alpha=-0.1), rtol=0, atol=0)
    fixed = run_optimizer(lambda p: Muon(p, lr=0.1), w0, [g], [0.9])[0]
    assert rel_err(got - w0, fixed - w0) > 0.05  # a different update, not bf16 noise


def test_row_normalize_divides_rows_with_floor():
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-9, 0.0]])
    torch.testing.assert_close(row_normalize(g), torch.tensor([[0.6, 0.8], [0.0, 0.0], [1e-2, 0.0]]))


def test_muon_eq_r_normalizes_rows_before_orthogonalization():
    _, (g,) = problem((16, 24), n=1)
    huge = g.clone()
    huge[3] *= 2.0**20  # one huge row; a power of two keeps the row normalization exact
    zeros = torch.zeros(16, 24)
    eq_r = lambda p: Muon(p, lr=1.0, momentum=0.0, row_normalize=True)  # noqa: E731
    plain = lambda p: Muon(p, lr=1.0, momentum=0.0)  # noqa: E731
    upd = run_optimizer(eq_r, zeros, [g], [0.0])[0]
    # the huge row is invisible to MuonEq-R: both inputs have the same row-normalized form
    assert torch.equal(run_optimizer(eq_r, zeros, [huge], [0.0])[0], upd)
    # the update is NS of the row-normalized matrix (normalize, then orthogonalize) ...
    torch.testing.assert_close(-upd, zeropower_newton_schulz(row_normalize(g)).float(), rtol=0, atol=0)
    # ... which is not plain Muon, nor plain Muon with rows normalized afterwards
    assert rel_err(-run_optimizer(plain, zeros, [g], [0.0])[0], -upd) > 0.02
    assert rel_err(row_normalize(zeropower_newton_schulz(g).float()), -upd) > 0.02
    # without MuonEq-R the huge row dominates: the update is nearly rank one
    sv = torch.linalg.svdvals(run_optimizer(plain, zeros, [huge], [0.0])[0])
    assert sv[1] < 0.05 * sv[0]


def test_muon_eq_r_leaves_the_momentum_buffer_alone():
    w0, (g1, g2) = problem((16, 8), n=2)
    w = torch.nn.Parameter(w0.clone())
    opt = Muon([w], lr=0.01, momentum=0.9, row_normalize=True, ns_coefficients="polar_express")
    for g in (g1, g2):
        w.grad = g.clone()
        opt.step()
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], 0.9 * g1 + g2)


def test_muon_rejects_unknown_coefficient_names():
    with pytest.raises(ValueError, match="ns_coefficients"):
        Muon([torch.nn.Parameter(torch.zeros(4, 4))], ns_coefficients="quintic")


# --- grouping of the quintic term in bf16 (issue 24 item 9) -------------------------------------------------------


def top_reference_step(w0: torch.Tensor, g: torch.Tensor, mu: float, lr: float) -> torch.Tensor:
    """One Muon step of the leaderboard top written from docs/top-stack.md §4.2 with the top code's grouping:
    Nesterov from a zero buffer (buf = g; the seed's ``g.add(buf, alpha=mu)``), MuonEq-R rows, then per
    iteration ``B = b*A + c*(A@A)`` in bf16, and the seed's ``p.add_(update, alpha=-lr)``."""
    d = g.add(g, alpha=mu)
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-7)
    x = d.bfloat16()
    x = x / (x.norm() + 1e-7)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    for a, b, c in POLAR_EXPRESS_COEFFICIENTS:
        A = x @ x.T
        B = b * A + c * (A @ A)
        x = a * x + B @ x
    x = x.T if tall else x
    return w0.add((x * math.sqrt(max(1, g.size(0) / g.size(1)))).float(), alpha=-lr)


@pytest.mark.parametrize("shape", [(24, 48), (48, 24)])
def test_polar_express_bf16_step_is_bitwise_the_tops_grouping(shape):
    w0, (g,) = problem(shape, n=1, seed=7)
    make = lambda p: Muon(p, lr=0.1, momentum=0.9, ns_coefficients="polar_express", row_normalize=True)  # noqa: E731
    got = run_optimizer(make, w0, [g], [0.9])[0]
    assert torch.equal(got, top_reference_step(w0, g, 0.9, 0.1))
    # the other grouping is a different bf16 computation (so this test can fail), equal in fp64
    d = row_normalize(g.add(g, alpha=0.9))
    ours = zeropower_newton_schulz(d, coefficients=POLAR_EXPRESS_COEFFICIENTS)
    seedlike = zeropower_newton_schulz(d, coefficients=POLAR_EXPRESS_COEFFICIENTS, square_first=False)
    assert rel_err(seedlike.float(), ours.float()) > 1e-3
    d64 = d.double()
    torch.testing.assert_close(
        zeropower_newton_schulz(d64, coefficients=POLAR_EXPRESS_COEFFICIENTS, dtype=torch.float64),
        zeropower_newton_schulz(d64, coefficients=POLAR_EXPRESS_COEFFICIENTS, dtype=torch.float64, square_first=False),
        rtol=0,
        atol=1e-12,
    )


@pytest.mark.parametrize("shape", [(24, 48), (48, 24)])
def test_fixed_coefficients_keep_the_seeds_grouping_bitwise(shape):
    _, (g,) = problem(shape, n=1, seed=8)
    assert torch.equal(zeropower_newton_schulz(g), reference_ns(g))  # reference_ns: the seed's `c * A @ A`
    assert not torch.equal(zeropower_newton_schulz(g, square_first=True), reference_ns(g))

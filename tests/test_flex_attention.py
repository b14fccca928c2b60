"""Document-masked attention through flex_attention (issue 24 item 6): the block mask read off the segment ids,
flex == the dense-mask SDPA path, and which kernel each backend setting picks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import golf_lit.model.attention as attention
from golf_lit.model.attention import document_block_mask, segment_backend
from golf_lit.model.gpt import GPT
from golf_lit.model.layers import segment_positions

from .conftest import tiny_config
from .test_top_model import ALL_TOP, randomized


def random_layout(B: int, T: int, seed: int) -> torch.Tensor:
    """cu_seqlens of B rows of T tokens cut into random segments (lengths 1..40, some longer than a tile)."""
    g = torch.Generator().manual_seed(seed)
    starts = []
    for row in range(B):
        t = 0
        while t < T:
            starts.append(row * T + t)
            t += int(torch.randint(1, 41, (1,), generator=g))
    return torch.tensor([*starts, B * T], dtype=torch.int32)


def dense_blocks(num: torch.Tensor, idx: torch.Tensor, nb: int) -> torch.Tensor:
    """(B, nq, nk) booleans of the key blocks listed by a BlockMask's (num_blocks, indices) pair."""
    B = num.size(0)
    out = torch.zeros(B, nb, nb, dtype=torch.bool)
    for b in range(B):
        for i in range(nb):
            out[b, i, idx[b, 0, i, : num[b, 0, i]].long()] = True
    return out


@pytest.mark.parametrize(("T", "block", "seed"), [(24, 4, 0), (61, 8, 1), (130, 16, 2), (64, 64, 3)])
def test_block_mask_structure_is_the_token_masks(T, block, seed):
    B = 2
    segment, _ = segment_positions(random_layout(B, T, seed), B, T)
    bm = document_block_mask(segment, block_size=block)
    nb = -(-T // block)
    tokens = (segment[:, :, None] == segment[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    padded = F.pad(tokens, (0, nb * block - T, 0, nb * block - T))  # pairs past the row end are never allowed
    tiles = padded.reshape(B, nb, block, nb, block)
    truth_any, truth_all = tiles.any(dim=(2, 4)), tiles.all(dim=(2, 4))
    partial = dense_blocks(bm.kv_num_blocks, bm.kv_indices, nb)
    full = dense_blocks(bm.full_kv_num_blocks, bm.full_kv_indices, nb)
    assert not (partial & full).any()  # flex needs disjoint lists
    assert torch.equal(partial | full, truth_any)  # every block with an allowed pair is visited, no other
    assert torch.equal(full, truth_all)  # full tiles skip the mask: exactly those where every pair is allowed
    assert full.any() or T <= 2 * block  # long layouts have whole-tile segments, so the full path is exercised
    # the token mask of the BlockMask is the document mask
    q, k = torch.arange(T)[:, None], torch.arange(T)[None, :]
    for b in range(B):
        got = bm.mask_mod(torch.tensor(b), torch.tensor(0), q, k)
        assert torch.equal(got, tokens[b])


def gpt_pair(**overrides):
    """The same randomized top-option model with the dense-mask SDPA path and with flex_attention."""
    cfg = {**ALL_TOP, "bigram_vocab_size": 0, **overrides}
    sdpa = randomized(tiny_config(**cfg, attention_backend="sdpa"))
    flex = GPT(tiny_config(**cfg, attention_backend="flex"))
    flex.load_state_dict(sdpa.state_dict())
    return sdpa.eval(), flex.eval()


@pytest.mark.parametrize("rope_positions", ["flat", "per_document"])
def test_flex_equals_masked_sdpa_on_the_cpu(rope_positions):
    """GQA (4 query / 2 KV heads), XSA, sparse gate, looping and two lanes: logits of flex == dense-mask SDPA,
    on rows long enough (300) for several 128-token tiles, some full, some partial, some skipped."""
    sdpa, flex = gpt_pair(rope_positions=rope_positions)
    B, T = 2, 300
    ids = torch.randint(2, 64, (B, T), generator=torch.Generator().manual_seed(5))
    cu = random_layout(B, T, seed=9)
    ids.view(-1)[cu[:-1].long()] = 1  # a BOS at every segment start
    with torch.no_grad():
        want, got = sdpa(ids, cu), flex(ids, cu)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # fp32; the kernels sum in other orders
        # and flex really is document-masked: changing one token moves nothing outside its own segment
        seg, _ = segment_positions(cu, B, T)
        t = int(cu[3])
        changed = ids.clone()
        changed.view(-1)[t + 1] = 2 + (changed.view(-1)[t + 1] - 2 + 17) % 62
        moved = (flex(changed, cu) - got).abs().amax(-1).view(-1) > 0
        assert moved.any() and torch.equal(moved, (seg.view(-1) == seg.view(-1)[t]) & (torch.arange(B * T) > t))


def test_backend_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert segment_backend("auto", cpu) == "sdpa"  # flex has no CPU backward; eager flex is dense anyway
    for explicit in ("sdpa", "fa3", "flex"):
        assert segment_backend(explicit, cpu) == explicit and segment_backend(explicit, cuda) == explicit
    monkeypatch.setattr(attention, "flash_attn_3_varlen", lambda: None)
    assert segment_backend("auto", cuda) == "flex"  # a stock CUDA torch: no dense T x T mask
    monkeypatch.setattr(attention, "flash_attn_3_varlen", lambda: object())
    assert segment_backend("auto", cuda) == "fa3"


def test_only_flex_builds_a_block_mask():
    seen = {}
    for backend in ("auto", "sdpa", "flex"):
        model = GPT(tiny_config(attention_backend=backend, bigram_vocab_size=0))
        hook = model.blocks[0].attn.register_forward_pre_hook(
            lambda m, args, backend=backend: seen.__setitem__(backend, args[2].block_mask)
        )
        with torch.no_grad():
            model(torch.randint(2, 64, (1, 24)), torch.tensor([0, 10, 24], dtype=torch.int32))
        hook.remove()
    assert seen["auto"] is None and seen["sdpa"] is None and seen["flex"] is not None


@pytest.mark.slow
def test_flex_path_traces_as_one_graph_and_a_new_layout_does_not_recompile():
    """GolfLM compiles the GPT with fullgraph=True: the block mask, the backend lookup and flex_attention must trace
    without a graph break, and a batch with other document boundaries (same shapes) must reuse the graph."""
    torch._dynamo.reset()
    graphs = []

    def counting_backend(gm, example_inputs):  # dynamo only (no inductor): checks tracing, fast on a CPU
        graphs.append(gm)
        return gm.forward

    _, flex = gpt_pair()
    compiled = torch.compile(flex, backend=counting_backend, fullgraph=True, dynamic=False)
    ids = torch.randint(2, 64, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for cu in ([0, 10, 40, 55, 80], [0, 20, 40, 41, 80]):
            cu = torch.tensor(cu, dtype=torch.int32)
            torch.testing.assert_close(compiled(ids, cu), flex(ids, cu), rtol=0, atol=0)
    assert len(graphs) == 1
    torch._dynamo.reset()

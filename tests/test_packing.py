"""Document packing: cu_seqlens by hand, its invariants on the bundled sample, rank slices, determinism, and
that GolfLM hands cu_seqlens to the model (docs/top-stack.md §2.4-2.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from golf_lit.data.datamodule import GolfDataModule, TrainStream
from golf_lit.data.packing import CU_SEQLENS_MULTIPLE, document_cu_seqlens, pad_cu_seqlens
from golf_lit.data.paths import SAMPLE_TRAIN_FILES, resolve
from golf_lit.data.shards import TokenStream
from tests.test_train import tiny_data

BOS = 1


def cu(tokens, max_len=2048, pad=1):
    return document_cu_seqlens(torch.tensor(tokens), BOS, max_len, pad).tolist()


@pytest.mark.parametrize(
    "tokens,max_len,expected",
    [
        ([5, 1, 7, 8, 1, 9], 2048, [0, 1, 4, 6]),  # starts mid-document: position 0 is a start
        ([1, 5, 1, 2], 2048, [0, 2, 4]),  # starts at a BOS: no duplicate 0
        ([1, 5, 5, 5, 5, 5, 5, 1, 2, 3], 3, [0, 3, 6, 7, 10]),  # 7-token doc cut at 3 and 6; 3-token doc whole
        ([4, 4, 4, 4, 4], 2, [0, 2, 4, 5]),  # no BOS at all: cuts from the row start
        ([1, 1, 1], 2048, [0, 1, 2, 3]),  # one-token documents
        ([9, 9, 1, 9, 9, 9, 9], 2, [0, 2, 4, 6, 7]),  # the partial first document is cut from position 0
        ([7], 2048, [0, 1]),
    ],
)
def test_cu_seqlens_by_hand(tokens, max_len, expected):
    assert cu(tokens, max_len) == expected


def test_padding_repeats_the_total_to_a_multiple():
    assert cu([1, 5, 5, 5, 5, 5, 5, 1, 2, 3], 3, pad=4) == [0, 3, 6, 7, 10, 10, 10, 10]
    assert cu([1, 5, 1], pad=3) == [0, 2, 3]  # already a multiple: nothing added
    default = document_cu_seqlens(torch.tensor([5, 1, 7]), BOS, 2048)
    assert default.dtype == torch.int32 and default.numel() == CU_SEQLENS_MULTIPLE == 64
    assert default[:3].tolist() == [0, 1, 3] and (default[3:] == 3).all()


def test_bad_rows_raise():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        document_cu_seqlens(torch.tensor([[1, 2]]), BOS, 4)
    with pytest.raises(ValueError, match="max_segment_len"):
        document_cu_seqlens(torch.tensor([1, 2]), BOS, 0)


def check_segments(row: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int) -> int:
    """The packing invariants; returns the number of segments."""
    n, c = row.numel(), cu_seqlens.tolist()
    assert cu_seqlens.dtype == torch.int32 and len(c) % CU_SEQLENS_MULTIPLE == 0
    k = c.index(n)
    starts, tail = c[:k], c[k:]
    assert starts[0] == 0 and all(t == n for t in tail)  # padding is the total only
    assert all(a < b for a, b in zip(starts, starts[1:] + [n]))  # strictly increasing: no empty segment inside
    bos = set(np.flatnonzero(row.numpy() == BOS).tolist())
    assert bos <= set(starts)  # every BOS starts a segment
    prev_doc = 0
    for s, e in zip(starts, starts[1:] + [n]):
        assert e - s <= max_len
        assert not bos & set(range(s + 1, e))  # no document boundary inside a segment
        if s in bos:
            prev_doc = s
        elif s != 0:  # neither a BOS nor the row start: a cut, a whole number of max_len past its document start
            assert (s - prev_doc) % max_len == 0
    return k


@pytest.mark.parametrize("max_len", [2048, 100])
def test_invariants_on_the_sample_stream(max_len):
    stream = TokenStream(resolve(SAMPLE_TRAIN_FILES))
    segments = 0
    for offset in (0, 12_345, 400_000, stream.total - 5_000):  # the last one wraps past the end of the stream
        row = torch.from_numpy(stream.read(offset, 16_384))
        segments += check_segments(row, document_cu_seqlens(row, BOS, max_len), max_len)
    assert segments > 4 * 16_384 / 2048  # documents were found and long ones cut


def make_stream(rank=0, world=1, grad_accum=1, local=4096, start=0, packing=True, max_len=2048):
    stream = TokenStream(resolve(SAMPLE_TRAIN_FILES))
    return TrainStream(
        stream,
        start,
        grad_accum,
        local,
        256,
        rank,
        world,
        document_packing=packing,
        bos_id=BOS,
        max_segment_len=max_len,
    )


def test_packed_batches_hold_the_same_tokens_as_the_dense_stream():
    for step in (0, 7):
        x, y, c = make_stream(grad_accum=2).step_batch(step)
        xd, yd = make_stream(grad_accum=2, packing=False).step_batch(step)
        assert x.shape == (2, 1, 4096) and c.shape[0] == 2 and c.dtype == torch.int32
        assert torch.equal(x.flatten(), xd.flatten()) and torch.equal(y.flatten(), yd.flatten())
        assert torch.equal(y[:, :, :-1], x[:, :, 1:])  # targets are the inputs shifted by one
        for m in range(2):  # each row's cu_seqlens is its own, the shorter one padded with its total
            own = document_cu_seqlens(x[m, 0], BOS, 2048)
            assert torch.equal(c[m, : own.numel()], own) and (c[m, own.numel() :] == 4096).all()
            check_segments(x[m, 0], c[m], 2048)


def test_rank_slices_tile_the_global_span():
    world, local, step = 4, 1024, 3
    stream = TokenStream(resolve(SAMPLE_TRAIN_FILES))
    span = local + 1
    for r in range(world):
        x, y, c = make_stream(rank=r, world=world, local=local).step_batch(step)
        expected = torch.from_numpy(stream.read(step * world * span + r * span, span))  # record-stack §2.3 slice r
        assert torch.equal(x[0, 0], expected[:-1]) and torch.equal(y[0, 0], expected[1:])
        assert torch.equal(c[0], document_cu_seqlens(expected[:-1], BOS, 2048))


def test_stream_is_deterministic_and_step_addressed():
    a, b = make_stream(grad_accum=2), make_stream(grad_accum=2, start=5)
    it = iter(a)
    batches = [next(it) for _ in range(7)]
    again = iter(make_stream(grad_accum=2))
    for batch in batches:
        assert all(torch.equal(p, q) for p, q in zip(batch, next(again)))
    assert all(torch.equal(p, q) for p, q in zip(batches[5], next(iter(b))))  # a resume at step 5 matches


def test_max_segment_len_cuts_long_documents():
    _, _, c = make_stream(max_len=100).step_batch(0)
    _, _, c_long = make_stream().step_batch(0)
    segs = lambda t: int((t[1:] != t[:-1]).sum())  # noqa: E731
    assert segs(c[0]) > segs(c_long[0])
    x = make_stream().step_batch(0)[0]
    check_segments(x[0, 0], c[0], 100)


def sample_data(**kw) -> GolfDataModule:
    """The training tests' tiny data module on the bundled sample, with document packing on."""
    return tiny_data(**{"document_packing": True, "max_segment_len": 64, **kw})


def test_datamodule_serves_packed_batches_with_the_tokenizers_bos():
    dm = sample_data(grad_accum_steps=2)
    dm.setup("fit")
    assert dm.bos_id == BOS  # read from the tokenizer
    x, y, c = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (2, 1, 128) and c.shape == (2, 64)
    check_segments(x[1, 0], c[1], 64)
    xv, yv = next(iter(dm.val_dataloader()))  # validation keeps its dense (B, T) batches
    assert xv.shape[1] == 32
    off = sample_data(document_packing=False)
    off.setup("fit")
    assert len(next(iter(off.train_dataloader()))) == 2


def test_datamodule_rejects_bad_segment_length():
    with pytest.raises(ValueError, match="data.max_segment_len"):
        sample_data(max_segment_len=0)


def test_lit_module_passes_cu_seqlens_to_the_model(tmp_path):
    """Until the model takes cu_seqlens, a stand-in forward records what GolfLM hands it, per micro-batch."""
    import lightning.pytorch as L
    from golf_lit.callbacks import CompilePriming

    from golf_lit.optim.config import OptimConfig
    from golf_lit.train.module import GolfLM

    L.seed_everything(0)
    module = GolfLM(
        optim=OptimConfig(),
        vocab_size=1024,
        num_layers=1,
        model_dim=32,
        num_heads=2,
        num_kv_heads=1,
        rope_dims=8,
        xsa_last_n=1,
        bigram_vocab_size=64,
        bigram_dim=16,
    )
    seen: list[torch.Tensor] = []

    def forward(input_ids, cu_seqlens=None, targets=None, max_seqlen=None):
        seen.append(cu_seqlens)
        return module.gpt(input_ids, targets=targets)

    object.__setattr__(module, "_forward", forward)
    dm = sample_data(grad_accum_steps=2)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
        default_root_dir=tmp_path,
        callbacks=[CompilePriming(1)],
    )
    trainer.fit(module, dm)
    stream = dm.train_dataloader().dataset
    expected = [stream.step_batch(0)[2]] + [stream.step_batch(s)[2] for s in (0, 1)]  # priming, then 2 steps
    assert len(seen) == 6
    for i, c in enumerate(seen):
        assert torch.equal(c, expected[i // 2][i % 2])


def test_pad_cu_seqlens_keeps_each_rows_total():
    rows = [torch.tensor([0, 2, 2, 2], dtype=torch.int32), torch.tensor([0, 1, 2, 3, 4, 5, 6, 6], dtype=torch.int32)]
    assert pad_cu_seqlens(rows).tolist() == [[0, 2, 2, 2, 2, 2, 2, 2], [0, 1, 2, 3, 4, 5, 6, 6]]

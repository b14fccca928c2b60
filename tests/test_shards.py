"""Shard format checks, the wrapped token stream and the seed's rank slicing (docs/record-stack.md §2.1, §2.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from golf_lit.data.paths import SAMPLE_TRAIN_FILES, SAMPLE_VAL_FILES, resolve
from golf_lit.data.shards import (
    HEADER_BYTES,
    ShardError,
    TokenStream,
    find_shards,
    load_shard,
    load_validation_tokens,
    read_shard_header,
    write_shard,
)


def test_write_read_roundtrip(tmp_path):
    path = write_shard(tmp_path / "fineweb_train_000000.bin", [1, 2, 65535, 0])
    assert path.stat().st_size == HEADER_BYTES + 8
    header = np.fromfile(path, dtype="<i4", count=256)
    assert header[:3].tolist() == [20240520, 1, 4] and not header[3:].any()
    assert load_shard(path).tolist() == [1, 2, 65535, 0]


@pytest.mark.parametrize(
    "patch, check",
    [
        (lambda h, p: h.__setitem__(0, 1234), "magic"),
        (lambda h, p: h.__setitem__(1, 2), "version"),
        (lambda h, p: h.__setitem__(2, 5), "file size"),
    ],
)
def test_bad_header_names_file_and_check(tmp_path, patch, check):
    path = write_shard(tmp_path / "s.bin", [1, 2, 3, 4])
    header = np.fromfile(path, dtype="<i4", count=256)
    patch(header, path)
    data = path.read_bytes()
    path.write_bytes(header.tobytes() + data[HEADER_BYTES:])
    with pytest.raises(ShardError, match=check) as err:
        read_shard_header(path)
    assert str(path) in str(err.value)


def test_truncated_file_is_a_size_error(tmp_path):
    path = write_shard(tmp_path / "s.bin", list(range(10)))
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ShardError, match="file size"):
        load_shard(path)


def test_write_rejects_ids_beyond_uint16(tmp_path):
    with pytest.raises(ValueError, match="65536"):
        write_shard(tmp_path / "s.bin", np.array([1, 65536]))
    assert not (tmp_path / "s.bin").exists()


def test_empty_glob_names_pattern(tmp_path):
    pattern = str(tmp_path / "fineweb_train_*.bin")
    with pytest.raises(FileNotFoundError, match="fineweb_train_"):
        find_shards(pattern)


def test_stream_concatenates_sorted_shards_and_wraps(tmp_path):
    write_shard(tmp_path / "t_000001.bin", [10, 11, 12])
    write_shard(tmp_path / "t_000000.bin", [0, 1])
    stream = TokenStream(str(tmp_path / "t_*.bin"))
    assert stream.total == 5
    assert stream.read(0, 5).tolist() == [0, 1, 10, 11, 12]
    assert stream.read(3, 6).tolist() == [11, 12, 0, 1, 10, 11]  # wraps past the last shard
    assert stream.read(7, 2).tolist() == [10, 11]  # offsets are taken modulo the total


def test_micro_batch_rank_slicing_matches_spec(tmp_path):
    # world 2, local_tokens 4, seq 2: each micro-batch takes 2 * (4 + 1) = 10 tokens; rank r takes the r-th 5.
    write_shard(tmp_path / "t_000000.bin", list(range(100)))
    stream = TokenStream(str(tmp_path / "t_*.bin"))
    x0, y0 = stream.micro_batch(0, local_tokens=4, seq_len=2, rank=0, world_size=2)
    x1, y1 = stream.micro_batch(0, local_tokens=4, seq_len=2, rank=1, world_size=2)
    assert x0.tolist() == [[0, 1], [2, 3]] and y0.tolist() == [[1, 2], [3, 4]]
    assert x1.tolist() == [[5, 6], [7, 8]] and y1.tolist() == [[6, 7], [8, 9]]
    x, y = stream.micro_batch(3, local_tokens=4, seq_len=2, rank=1, world_size=2)
    assert x.tolist() == [[35, 36], [37, 38]] and y.tolist() == [[36, 37], [38, 39]]
    assert x.dtype == torch.int64


def test_validation_truncation(tmp_path):
    write_shard(tmp_path / "v_000000.bin", list(range(23)))
    tokens = load_validation_tokens(str(tmp_path / "v_*.bin"), seq_len=5)
    assert tokens.tolist() == list(range(21))  # ((23 - 1) // 5) * 5 + 1 = 21
    with pytest.raises(ValueError, match="too short"):
        load_validation_tokens(str(tmp_path / "v_*.bin"), seq_len=50)


def test_bundled_sample_is_valid_and_document_aligned():
    train = TokenStream(resolve(SAMPLE_TRAIN_FILES))
    val = load_validation_tokens(resolve(SAMPLE_VAL_FILES), 1024)
    assert train.total == 828_667 and train.read(0, 1).tolist() == [1]  # starts with BOS
    assert val[0].item() == 1 and val.numel() == (127_987 - 1) // 1024 * 1024 + 1
    # at most ~2 MB of shard tokens ship with the package
    assert sum(f.stat().st_size for f in train.files) + 2 * 127_987 < 2_000_000

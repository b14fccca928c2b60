"""LightningDataModule for the challenge data: the rank-sliced training stream and full-split validation."""

from __future__ import annotations

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from golf_lit.data.byte_source import ByteSource, SidecarBytes, load_byte_source
from golf_lit.data.manifest import check_dataset
from golf_lit.data.packing import document_cu_seqlens, pad_cu_seqlens
from golf_lit.data.paths import DEFAULT_TOKENIZER, DEFAULT_TRAIN_FILES, DEFAULT_VAL_FILES, resolve
from golf_lit.data.shards import TokenStream, check_token_ids, load_validation_tokens
from golf_lit.data.tokenizer import load_tokenizer
from golf_lit.ranks import rank_range


class TrainStream(IterableDataset):
    """Yields one optimizer step's micro-batches for this rank: ``(x, y)`` of shape (grad_accum, B, T).

    Step ``k`` uses micro-batches ``k * grad_accum ... (k + 1) * grad_accum - 1`` of the seed's stream
    (docs/record-stack.md §2.3), so the data position is fully determined by the optimizer step it starts from.

    With ``document_packing`` (docs/top-stack.md §2.4) each micro-batch is the same rank slice as one packed row,
    ``(x, y)`` of shape (grad_accum, 1, local_tokens), plus ``cu_seqlens`` (grad_accum, K): int32 segment starts
    of each row (``golf_lit.data.packing.document_cu_seqlens``), the rows padded to a common K.
    """

    def __init__(
        self,
        stream: TokenStream,
        start_step: int,
        grad_accum: int,
        local_tokens: int,
        seq_len: int,
        rank: int,
        world_size: int,
        document_packing: bool = False,
        bos_id: int = 1,
        max_segment_len: int = 2048,
    ) -> None:
        self.stream, self.start_step, self.grad_accum = stream, start_step, grad_accum
        self.local_tokens, self.seq_len, self.rank, self.world_size = local_tokens, seq_len, rank, world_size
        self.document_packing, self.bos_id, self.max_segment_len = document_packing, bos_id, max_segment_len

    def step_batch(self, step: int) -> tuple[torch.Tensor, ...]:
        """The micro-batches of optimizer step ``step``: ``(x, y)``, or ``(x, y, cu_seqlens)`` when packing."""
        row_len = self.local_tokens if self.document_packing else self.seq_len  # packing: one row per micro-batch
        pairs = [
            self.stream.micro_batch(step * self.grad_accum + m, self.local_tokens, row_len, self.rank, self.world_size)
            for m in range(self.grad_accum)
        ]
        x, y = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        if not self.document_packing:
            return x, y
        cu = [document_cu_seqlens(p[0][0], self.bos_id, self.max_segment_len) for p in pairs]
        return x, y, pad_cu_seqlens(cu)

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.step_batch(step)
            step += 1


class ValSequences(torch.utils.data.Dataset):
    """This rank's contiguous share of the non-overlapping validation sequences, in batches
    (docs/record-stack.md §10.1).

    With ``byte_counts`` (the CaseOps sidecar, one count per stream token) a batch is ``(x, y, nbytes)``, where
    ``nbytes`` are the original bytes of the targets ``y`` (docs/top-stack.md §2.3).
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        seq_len: int,
        batch_seqs: int,
        rank: int,
        world_size: int,
        byte_counts: torch.Tensor | None = None,
    ) -> None:
        total = (tokens.numel() - 1) // seq_len
        start, end = rank_range(total, rank, world_size)
        self.tokens, self.seq_len, self.byte_counts = tokens, seq_len, byte_counts
        self.batches = [(s, min(s + batch_seqs, end)) for s in range(start, end, batch_seqs)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        s, e = self.batches[i]
        chunk = self.tokens[s * self.seq_len : e * self.seq_len + 1]
        x, y = chunk[:-1].reshape(-1, self.seq_len), chunk[1:].reshape(-1, self.seq_len)
        if self.byte_counts is None:
            return x, y
        return x, y, self.byte_counts[s * self.seq_len + 1 : e * self.seq_len + 1].reshape(-1, self.seq_len)


class GolfDataModule(L.LightningDataModule):
    """Challenge shards for training and validation.

    Paths follow the challenge layout by default; the prefix ``sample:`` points into the bundled sample
    (``sample:fineweb10B_sp1024/fineweb_train_*.bin``).

    Args:
        train_files: Glob of training shards.
        val_files: Glob of validation shards.
        tokenizer_path: SentencePiece model (for the byte tables of val_bpb).
        train_batch_tokens: Tokens per optimizer step over all ranks (record: 786,432 = 384 x 2048).
        train_seq_len: Training sequence length.
        grad_accum_steps: Micro-batches per optimizer step per rank; None = 8 // world_size (the seed's rule).
        val_batch_tokens: Validation tokens per forward over all ranks and micro-batches (the seed's VAL_BATCH_SIZE).
        val_max_tokens: Use only the first N validation tokens (None = the full split, as the challenge scores).
        document_packing: Serve each rank's micro-batch as one packed row with ``cu_seqlens`` (segment starts at
            every BOS, at the row start and every ``max_segment_len`` tokens), so attention stays inside documents
            (docs/top-stack.md §2.4-2.5, record 0410-VarLen). Training batches become ``(x, y, cu_seqlens)``;
            validation is unchanged. The BOS id is the tokenizer's.
        max_segment_len: Longest attention segment when packing (top: 2048).
    """

    def __init__(
        self,
        train_files: str = DEFAULT_TRAIN_FILES,
        val_files: str = DEFAULT_VAL_FILES,
        tokenizer_path: str = DEFAULT_TOKENIZER,
        train_batch_tokens: int = 786_432,
        train_seq_len: int = 2048,
        grad_accum_steps: int | None = None,
        val_batch_tokens: int = 524_288,
        val_max_tokens: int | None = None,
        document_packing: bool = False,
        max_segment_len: int = 2048,
    ) -> None:
        super().__init__()
        for key in ("train_batch_tokens", "train_seq_len", "val_batch_tokens", "max_segment_len"):
            if locals()[key] <= 0:
                raise ValueError(f"data.{key}: must be positive, got {locals()[key]}")
        if grad_accum_steps is not None and grad_accum_steps <= 0:
            raise ValueError(f"data.grad_accum_steps: must be positive or null, got {grad_accum_steps}")
        if val_max_tokens is not None and val_max_tokens <= 0:  # 0 would silently mean one sequence
            raise ValueError(f"data.val_max_tokens: must be positive or null (the full split), got {val_max_tokens}")
        self.save_hyperparameters()
        self.train_files, self.val_files, self.tokenizer_path = train_files, val_files, tokenizer_path
        self.train_batch_tokens, self.train_seq_len = train_batch_tokens, train_seq_len
        self._grad_accum = grad_accum_steps
        self.val_batch_tokens, self.val_max_tokens = val_batch_tokens, val_max_tokens
        self.document_packing, self.max_segment_len = document_packing, max_segment_len
        self.bos_id: int | None = None
        self.luts: ByteSource | None = None
        """The byte source of val_bpb: the tokenizer's LUTs, or the CaseOps sidecar (``data.byte_source``)."""
        self.vocab_size: int | None = None
        self.stream: TokenStream | None = None
        self.val_tokens: torch.Tensor | None = None

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    @property
    def rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    @property
    def grad_accum_steps(self) -> int:
        """Micro-batches per optimizer step per rank."""
        if self._grad_accum is not None:
            return self._grad_accum
        if 8 % self.world_size:
            raise ValueError(
                f"data.grad_accum_steps: the default 8 // world_size needs a world size dividing 8, got "
                f"{self.world_size}; set data.grad_accum_steps explicitly"
            )
        return 8 // self.world_size

    @property
    def local_tokens(self) -> int:
        """Tokens per micro-batch per rank."""
        return self.train_batch_tokens // (self.world_size * self.grad_accum_steps)

    def check_batch_shape(self) -> None:
        """Raise naming ``data.train_batch_tokens`` unless it divides into whole sequences per micro-batch."""
        unit = self.world_size * self.grad_accum_steps * self.train_seq_len
        if self.train_batch_tokens % unit:
            raise ValueError(
                f"data.train_batch_tokens: {self.train_batch_tokens} is not divisible by world_size "
                f"({self.world_size}) x grad_accum_steps ({self.grad_accum_steps}) x train_seq_len "
                f"({self.train_seq_len}) = {unit}"
            )

    def setup(self, stage: str | None = None) -> None:
        self.check_batch_shape()
        sp = load_tokenizer(resolve(self.tokenizer_path))
        self.vocab_size = int(sp.vocab_size())
        self.bos_id = int(sp.bos_id())
        if self.document_packing and self.bos_id < 0:
            raise ValueError(
                f"data.document_packing: the tokenizer {self.tokenizer_path} defines no BOS id, so documents cannot "
                "be found in the token stream"
            )
        if stage in (None, "fit"):
            # sizes, header counts and the tokenizer's sha256 against a tokenize manifest
            check_dataset(resolve(self.train_files), tokenizer=resolve(self.tokenizer_path))
            self.stream = TokenStream(resolve(self.train_files), vocab_size=self.vocab_size)
        check_dataset(resolve(self.val_files), tokenizer=resolve(self.tokenizer_path))
        self.val_tokens = load_validation_tokens(resolve(self.val_files), self.train_seq_len, self.val_max_tokens)
        check_token_ids(self.val_tokens, self.vocab_size, f"data.val_files {self.val_files}")
        self.luts = load_byte_source(resolve(self.val_files), sp, self.vocab_size, self.val_tokens.numel(),
                                     tokenizer_path=self.tokenizer_path)

    def _train_stream(self, start_step: int) -> TrainStream:
        return TrainStream(
            self.stream,
            start_step,
            self.grad_accum_steps,
            self.local_tokens,
            self.train_seq_len,
            self.rank,
            self.world_size,
            document_packing=self.document_packing,
            bos_id=self.bos_id if self.bos_id is not None else 1,
            max_segment_len=self.max_segment_len,
        )

    def train_dataloader(self) -> DataLoader:
        start = self.trainer.global_step if self.trainer is not None else 0  # resume continues at the same position
        return DataLoader(self._train_stream(start), batch_size=None)

    def step_batch(self, step: int) -> tuple[torch.Tensor, ...]:
        """This rank's training batch of optimizer step ``step``, as the train loader yields it at that step.

        Batches are addressed by step, so callbacks (compile priming) can read one without touching the loader.
        Needs ``setup("fit")``.
        """
        return self._train_stream(0).step_batch(step)

    def val_dataloader(self) -> DataLoader:
        local_batch = self.val_batch_tokens // (self.world_size * self.grad_accum_steps)
        if local_batch < self.train_seq_len:
            raise ValueError(
                f"data.val_batch_tokens: {self.val_batch_tokens} gives less than one sequence of "
                f"{self.train_seq_len} tokens per rank and micro-batch"
            )
        counts = self.luts.counts if isinstance(self.luts, SidecarBytes) else None
        ds = ValSequences(
            self.val_tokens, self.train_seq_len, local_batch // self.train_seq_len, self.rank, self.world_size, counts
        )
        return DataLoader(ds, batch_size=None)

"""How work is split across ranks. Free of torch.distributed and Lightning, so data, eval and the packed scorer
can all use it."""

from __future__ import annotations


def rank_range(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous share ``[start, end)`` of ``total`` items for ``rank`` (the seed's split)."""
    return (total * rank) // world_size, (total * (rank + 1)) // world_size

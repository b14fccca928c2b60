"""The DDP strategy used for training (how work splits across ranks is :func:`golf_lit.ranks.rank_range`)."""

from __future__ import annotations

from datetime import timedelta

from lightning.pytorch.strategies import DDPStrategy


class GolfDDP(DDPStrategy):
    """Lightning's DDP strategy with the record's DDP options as named arguments (docs/record-stack.md §13.1).

    golf-lit's model has no unused parameters (layer 0 has no value-residual lambdas), so plain DDP needs
    neither ``find_unused_parameters`` nor ``static_graph``; the latter stays available as an option. The model
    registers no buffers, so the seed's ``broadcast_buffers=False`` has nothing to switch off.

    Args:
        static_graph: Tell DDP the graph is the same every step (the seed's fix for its unused lambdas).
        gradient_as_bucket_view: Let gradients be views into DDP's all-reduce buckets (saves memory).
        process_group_backend: ``nccl`` on GPU, ``gloo`` on CPU by default.
        timeout_minutes: Collective timeout.
    """

    def __init__(
        self,
        static_graph: bool = False,
        gradient_as_bucket_view: bool = True,
        process_group_backend: str | None = None,
        timeout_minutes: float = 30.0,
    ) -> None:
        super().__init__(
            process_group_backend=process_group_backend,
            timeout=timedelta(minutes=timeout_minutes),
            static_graph=static_graph,
            gradient_as_bucket_view=gradient_as_bucket_view,
        )


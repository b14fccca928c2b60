"""Stage 2, the model: the record GPT and the leaderboard-top options, as plain ``torch.nn`` modules.

One job per module:
    config.py     ``ModelConfig`` (every option, record defaults)
    gpt.py        ``GPT``: embeddings, U-Net skips, looping, parallel residual lanes, the softcapped head
    attention.py  causal self-attention (GQA, XSA, gates, document masks)
    layers.py     ``CastedLinear``, RMS norm, rotary embeddings, segment positions
    losses.py     per-token NLL and the (fused, softcapped) training loss
    names.py      which parameters are control tensors (kept in float by the artifact)
    size.py       bounds on a model described by an untrusted file (checked before anything is allocated)

Imports nothing of golf_lit but itself: never torch.distributed, lightning, callbacks, eval or later stages.
"""

"""Stage 1, data: shards, the token stream, tokenizers and byte tables, CaseOps, the DataModule, ``golf-lit data``.

One job per module:
    paths.py            where data lives (the challenge layout; the bundled sample under ``sample:``)
    shards.py           the shard file format, the token stream, validation tokens
    manifest.py         a dataset folder's manifest (counts, sizes, sha256) and its checks
    tokenizer.py        SentencePiece loading and the byte lookup tables
    vocab.py            the vocabulary-size rule shared by fit, export and eval
    caseops.py          the CaseOps case transform and its exact inverse
    byte_source.py      bytes per target token: the tokenizer's tables or a CaseOps sidecar
    packing.py          document boundaries in packed rows (``cu_seqlens``)
    datamodule.py       ``GolfDataModule`` (LightningDataModule)
    encode.py           ``data tokenize``: documents -> shards (+ sidecars), built aside and moved in
    train_tokenizer.py  ``data train-tokenizer``
    download.py         ``data download``: the challenge's published shards
    cli.py              ``golf-lit data``

Imports only golf_lit's shared pieces (io, ranks); never model, eval or later stages.
"""

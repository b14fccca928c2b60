"""Stage 4, training: the LightningModule, its LightningCLI, checkpoints and the DDP strategy.

One job per module:
    module.py      ``GolfLM``: manual optimization (Muon + AdamW, one clip), the interface callbacks use
    cli.py         ``GolfCLI``: LightningCLI with safe checkpoints, a strict ``last`` and early output checks
    trainer.py     ``GolfTrainer``: the run folder's layout and its own ``train.log``
    checkpoint.py  checkpoint files: safe loading, whole-or-nothing writes, ``last``, EMA weights, rebuilding a GPT
    metrics.py     ``BitsPerByte``: the exact bpb as a torchmetrics Metric (validation during training)
    ddp.py         ``GolfDDP``: Lightning's DDP with the record's options

Imports data, model and optim; never artifact, eval, runs or callbacks (callbacks import this stage).
"""

"""Stage 7, the run workflow: commands that run or read whole runs, and the submission folder.

One job per module:
    rundir.py       a run directory: its layout, loading it, relocating its outputs, the same-config check
    export.py       ``golf-lit export`` and ``export_model``: checkpoint -> artifact -> roundtrip score -> report
    seeds.py        ``golf-lit seeds``: one config, several seeds, a table and a significance test
    submit.py       ``golf-lit submit``: the challenge's records folder
    ablate.py       ``golf-lit ablate``: a technique switched off per row, paired deltas
    plot.py         ``golf-lit plot``: loss and bpb curves from runs' CSV logs
    stats.py        mean/std, Student's t, Welch's test (no scipy)
    fingerprint.py  the machine and software a result came from
    pack/           train_gpt.py: the run's one packed, self-extracting file (the counted code)

The top of the pipeline: may import every stage below it; nothing in golf_lit imports it except the dispatcher.
"""

"""Stage 7, the run workflow: commands that run or read whole runs, and the submission folder.

One job per module:
    rundir.py       run directories for every command that runs or reads runs: the layout, the one rule that
                    relocates a config's outputs, the ``python -m golf_lit`` subprocess, loading a finished run,
                    the same-config check, a run's metrics.csv
    export.py       ``golf-lit export`` and ``export_model``: checkpoint -> artifact -> roundtrip score -> report
    seeds.py        ``golf-lit seeds``: one config, several seeds, a table and a significance test
    submit.py       ``golf-lit submit``: the challenge's records folder
    ablate.py       ``golf-lit ablate``: a technique switched off per row, paired deltas
    plot.py         ``golf-lit plot``: loss and bpb curves from runs' CSV logs
    stats.py        mean/std/standard error, Student's t, Welch's test (no scipy)
    fingerprint.py  the machine and software a result came from
    pack/           train_gpt.py: the run's one packed, self-extracting file (the counted code)

The top of the pipeline: may import every stage below it; nothing in golf_lit imports it except the dispatcher.
"""

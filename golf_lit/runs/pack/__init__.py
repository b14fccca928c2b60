"""train_gpt.py: a run's one counted file, as the challenge's records folder needs it (docs/runs.md).

One job per module:
    build.py   trace the modules a run's fit and claimed eval import, bake the configs, minify and compress them
               into one self-extracting file with a pinned requirements.txt; read the baked configs back
    record.py  the entry the file runs: the records' environment variables, fit, export, the claimed eval, the log
"""

"""Stage 6, evaluation: score an artifact with a Fabric program that controls its own loop (``golf-lit eval``).

One job per module:
    config.py       ``EvalConfig`` (strategies, data, per-strategy blocks)
    loading.py      the artifact's model config, trusted data defaults, loading the weights
    strategies/     one file per strategy (roundtrip, sliding, ttt, phased_ttt), one interface (base.py:
                    ``Strategy.score(EvalContext)``), the registry; phased TTT's engine and LoRA hooks beside it
    scorer.py       scoring windows of tokens into float64 sums (with the n-gram mixer)
    ngram.py        the normalized n-gram mixer
    invariants.py   the honest-score guards (causality, normalization, score-before-update, each token once),
                    phased TTT's guards and trace
                    and the recorders tests check them with
    sums.py         ``ScoreSums`` and bpb from sums
    budget.py       phase timings against the 600 s budget
    report.py       the JSON report and the record-shaped log lines
    evaluator.py    ``Evaluator``: the Fabric program
    cli.py          ``golf-lit eval``

Imports data, model and artifact; never training, runs or callbacks.
"""

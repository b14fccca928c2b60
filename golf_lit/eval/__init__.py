"""golf-lit eval: ``config`` (EvalConfig), ``artifact`` (model config, trusted data defaults, loading),
``strategies`` (one file per strategy, one interface, the registry), ``scorer``/``ngram``/``invariants``/``sums``
(scoring and its guards), ``budget`` (timings), ``report`` (JSON, log lines), ``evaluator`` (Fabric program),
``cli`` (``golf-lit eval``)."""

"""An analysis as data and the engine that runs one: sources -> judge -> result.

:mod:`~deploy_guard.analysis.sources` holds the evidence interfaces (probes,
Cloud Logging, Cloud Monitoring) and their production factory;
:mod:`~deploy_guard.analysis.engine` streams them into the pure judge until it
decides, every source completes, or the analysis' bound is up. An analysis
never acts: what to do with its result is a strategy's question
(:mod:`deploy_guard.strategies`), and doing it is the executor's
(:mod:`deploy_guard.actions`).
"""

"""Prefect orchestration of lob-sweep: thin flows over coarse, cached, retryable stage tasks.

    profiles.py     demo / full parameter sets, validation (one UserError line before any work)
    identity.py     file identities that key the task cache on the data and bundles read
    tasks.py        one task per library stage (paths and small dicts in and out)
    stages.py       the per-stage flows: feature-search, hpo, retrain, ensemble, package
    full_search.py  the full-search flow and its final report
    deploy.py       entry points for prefect.yaml (absolute imports)

Importing this package imports nothing heavy; ``profiles`` does not import Prefect,
so the CLI checks its arguments before Prefect starts.
"""

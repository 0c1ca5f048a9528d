"""trackemb.harvest: a folder of videos -> the PatchStore, as plain Python (no Prefect).

``pool.py`` runs :func:`~trackemb.tracking.outcome.harvest_one` in worker processes,
``ledger.py`` commits outcomes once per content hash (settling files, duplicates, old
versions), ``summary.py`` builds the run summary that the CLI and the flow both render.
"""

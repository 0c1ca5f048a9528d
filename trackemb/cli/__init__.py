"""`trackemb` command line: harvest | inspect | train | export | embed | cluster | evaluate | pipeline | serve.

Every command calls the same flows/library functions the Prefect deployments use. Settings
come from an optional TOML file (tables ``[harvest]``, ``[train]``, ``[export]``) and the
flags, flags winning. Each command checks its inputs first (:mod:`trackemb.cli.preflight`);
heavy imports happen inside the commands so ``--help`` and input errors are fast.
"""

from trackemb.cli import export, harvest, pipeline, train  # noqa: F401  (registers the commands)
from trackemb.cli.app import app, main

__all__ = ["app", "main"]

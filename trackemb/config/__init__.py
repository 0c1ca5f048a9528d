"""One frozen pydantic model per pipeline stage, loadable from TOML plus overrides.

Defaults are the small CPU demo on the bundled sample clips; field names carry their
units (``_px``, ``_frames``, ``_frac``). Unknown tables, unknown keys and wrong
types are errors (see :mod:`trackemb.config.file`). One module per stage:
``harvest.py`` (decode, motion, track), ``train.py`` (mine, train), ``export.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from trackemb.config.base import StageConfig
from trackemb.config.export import ExportConfig
from trackemb.config.file import check_config_file as check_tables
from trackemb.config.file import load_stage, write_config_json
from trackemb.config.harvest import DecodeConfig, HarvestConfig, MotionConfig, TrackConfig
from trackemb.config.train import MineConfig, TrainConfig
from trackemb.errors import ConfigError

__all__ = [
    "STAGE_TABLES", "ConfigError", "DecodeConfig", "ExportConfig", "HarvestConfig", "MineConfig",
    "MotionConfig", "StageConfig", "TrackConfig", "TrainConfig", "check_config_file", "load_config",
    "write_config_json",
]  # fmt: skip


C = TypeVar("C", bound=StageConfig)

# The tables a config file may hold; every one present is checked, whichever stage loads the file.
STAGE_TABLES: dict[str, type[BaseModel]] = {
    "harvest": HarvestConfig,
    "train": TrainConfig,
    "export": ExportConfig,
}


def load_config(
    cls: type[C],
    toml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    section: str | None = None,
    allow_top_level: bool = False,
) -> C:
    """Build ``cls`` from an optional TOML file plus dotted-key overrides (None values are ignored).

    Args:
        cls: the stage model, e.g. ``HarvestConfig``.
        toml_path: a TOML file; if ``section`` is given, only that table is used (``[harvest]``),
            but every table in the file is checked (:data:`STAGE_TABLES`).
        overrides: ``{"track.track_len_frames": 20}``-style values, typically from CLI flags.
        section: table name within the TOML file.
        allow_top_level: the file may instead hold ``cls``'s keys at its top level (no tables).

    Raises:
        ConfigError: unreadable TOML, an unknown table or key (naming the nearest valid
            name), or a wrong type; the message names the file and the table.
    """
    return load_stage(
        cls, toml_path, overrides, tables=STAGE_TABLES, section=section, allow_top_level=allow_top_level
    )


def check_config_file(toml_path: str | Path) -> dict[str, Any]:
    """Check every table of a config file now (unknown tables, keys, types); returns the parsed file."""
    return check_tables(toml_path, STAGE_TABLES)

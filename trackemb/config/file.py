"""Loading stage configs from TOML plus command-line overrides, with errors a user can act on.

Every table of a config file is checked whichever stage loads it, so a typo in ``[train]``
fails ``trackemb harvest --config`` at once instead of after the harvest. Errors name the
file, the table and the key, and suggest the nearest valid name (tables too).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from trackemb.errors import ConfigError

C = TypeVar("C", bound=BaseModel)
Tables = dict[str, type[BaseModel]]


def fingerprint(config: dict[str, Any]) -> str:
    """Short stable hash of a config dump (JSON with sorted keys): what keys derived work and a store."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(choices)})"


def _model_at(cls: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The nested config model a dotted location points into (``("mine",)`` -> MineConfig)."""
    for name in path:
        field = cls.model_fields.get(str(name))
        sub = field.annotation if field else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return None
        cls = sub
    return cls


def _describe(exc: ValidationError, cls: type[BaseModel], table: str | None) -> str:
    """pydantic's errors as short ``[table] key: problem`` phrases with a suggestion for typos."""
    parts = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join([table or "", *map(str, loc[:-1])]).strip(".")
        prefix = f"[{where}] " if where else ""
        key = str(loc[-1]) if loc else ""
        if err["type"] == "extra_forbidden":
            model = _model_at(cls, loc[:-1])
            choices = list(model.model_fields) if model else []
            kind = "table" if isinstance(err.get("input"), dict) else "key"
            parts.append(f"{prefix}unknown {kind} {key!r}{_suggest(key, choices)}")
        else:
            parts.append(f"{prefix}{key} = {err.get('input')!r}: {err['msg']}")
    return "; ".join(parts)


def _read_toml(toml_path: str | Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(toml_path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{toml_path}: no such config file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{toml_path}: cannot read config: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{toml_path}: not valid TOML: {exc}") from exc


def check_config_file(
    toml_path: str | Path, tables: Tables, *, allow_top_level: type[BaseModel] | None = None
) -> dict[str, Any]:
    """Read a config file and check every table in it: unknown tables and keys are errors.

    Args:
        toml_path: the TOML file.
        tables: the tables a file may hold, each with its model.
        allow_top_level: a stage model whose keys may also sit at the top level of the file
            (``python -m trackemb.embedding.train`` accepts a bare TrainConfig file).

    Returns:
        The parsed file.

    Raises:
        ConfigError: naming the file, the table, the key and the nearest valid name.
    """
    data = _read_toml(toml_path)
    names = list(tables)
    if allow_top_level is not None and not any(t in data for t in names):
        for name, value in data.items():
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            if isinstance(value, dict) and name not in allow_top_level.model_fields and close:
                raise ConfigError(f"{toml_path}: unknown table [{name}]; did you mean [{close[0]}]?")
        try:
            allow_top_level.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{toml_path}: {_describe(exc, allow_top_level, None)}") from exc
        return data
    for name, value in data.items():
        if name not in tables:
            what = f"table [{name}]" if isinstance(value, dict) else f"top-level key {name!r}"
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            raise ConfigError(f"{toml_path}: unknown {what}{hint} (valid tables: {', '.join(names)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{toml_path}: {name!r} must be a table ([{name}]), not a value")
        try:
            tables[name].model_validate(value)
        except ValidationError as exc:
            raise ConfigError(f"{toml_path}: {_describe(exc, tables[name], name)}") from exc
    return data


def load_stage(
    cls: type[C],
    toml_path: str | Path | None,
    overrides: dict[str, Any] | None,
    *,
    tables: Tables,
    section: str | None = None,
    allow_top_level: bool = False,
) -> C:
    """:func:`trackemb.config.load_config` for any set of ``tables`` (each table name with its model).

    Raises:
        ConfigError: unreadable TOML, an unknown table or key (with the nearest valid name),
            or a wrong type, naming the file and the table.
    """
    data: dict[str, Any] = {}
    table = None
    if toml_path is not None:
        if section is None:
            data = _read_toml(toml_path)
            try:
                cls.model_validate(data)
            except ValidationError as exc:
                raise ConfigError(f"{toml_path}: {_describe(exc, cls, None)}") from exc
        else:
            data = check_config_file(toml_path, tables, allow_top_level=cls if allow_top_level else None)
            bare = allow_top_level and not any(t in data for t in tables)
            if section in data:
                data, table = dict(data[section]), section
            elif not bare:
                data = {}
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        source = f"{toml_path} with command-line settings" if toml_path else "command-line settings"
        raise ConfigError(f"{source}: {_describe(exc, cls, table)}") from exc


def write_config_json(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config next to an output so every artifact says how it was made."""
    Path(path).write_text(json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")

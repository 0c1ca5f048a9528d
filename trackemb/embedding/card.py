"""The model card of an export directory: a typed, validated description of the encoder.

``model_card.json`` is read back by :func:`trackemb.load_encoder`, possibly from a
directory someone else produced, so it is treated as untrusted input: every field is
typed, sizes are bounded, the architecture must be one this package can build, and
each listed file carries a sha256 that is checked before its bytes are used.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trackemb.embedding.rundir import CKPT_NAME
from trackemb.errors import ModelCardError

CARD_NAME = "model_card.json"
CARD_SCHEMA = 1
# Encoders this package can rebuild; used when model.py offers no registry listing.
FALLBACK_ARCHS = ("resnet18", "resnet34", "resnet50", "smallcnn")


def known_architectures() -> tuple[str, ...]:
    """Names accepted in a card: the encoder registry's listing when available."""
    from trackemb.embedding import model

    lister = getattr(model, "list_encoders", None)
    return tuple(lister()) if callable(lister) else FALLBACK_ARCHS


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", max_length=128, description="Plain file name in the export dir."
    )
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class TrainingData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    videos: int | None = Field(None, ge=0, description="Videos the encoder was trained on (None: unknown).")
    pairs: int | None = Field(
        None, ge=0, description="Positive pairs available for training (None: unknown)."
    )


class ModelCard(BaseModel):
    """Everything needed to rebuild and use an exported encoder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    card_schema: int = Field(CARD_SCHEMA, description="Version of this card layout.")
    architecture: str
    embedding_dim: int = Field(ge=2, le=8192)
    embedding_layer: Literal["head", "backbone"] = Field(
        "head",
        description="What the encoder outputs: the projection head, or the backbone features before it.",
    )
    head_dim: int | None = Field(
        None, ge=2, le=8192, description="Projection head width (rebuilds the head)."
    )
    input_size: tuple[int, int] = Field(description="[H, W] of the float RGB input in [0, 1].")
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    normalised_output: bool = True
    training_data: TrainingData
    metrics: dict[str, Any] = Field(default_factory=dict)
    trackemb_version: str = Field(max_length=64)
    config: dict[str, Any] = Field(description="Training config of the run (TrainConfig as JSON).")
    export_config: dict[str, Any] = Field(default_factory=dict)
    step: int | None = Field(None, ge=0, description="Training step of the exported checkpoint.")
    created_at: str = Field(max_length=64)
    files: list[FileEntry] = Field(min_length=1)

    @field_validator("card_schema")
    @classmethod
    def _schema_known(cls, v: int) -> int:
        if v != CARD_SCHEMA:
            raise ValueError(
                f"card_schema {v} is not supported (this trackemb reads {CARD_SCHEMA}); re-export"
            )
        return v

    @field_validator("architecture")
    @classmethod
    def _arch_known(cls, v: str) -> str:
        archs = known_architectures()
        if v not in archs:
            raise ValueError(f"unknown architecture {v!r}; known: {', '.join(archs)}")
        return v

    @field_validator("input_size")
    @classmethod
    def _size_sane(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not all(16 <= s <= 1024 for s in v):
            raise ValueError(f"input_size {list(v)} outside 16..1024 px")
        if v[0] != v[1]:
            raise ValueError(f"input_size {list(v)} must be square (encoders take one input_px)")
        return v

    @field_validator("mean", "std")
    @classmethod
    def _stats_sane(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(x) and -1.0 <= x <= 2.0 for x in v):
            raise ValueError(f"{list(v)} is not a plausible per-channel statistic of [0, 1] images")
        return v

    @model_validator(mode="after")
    def _std_positive_and_weights_listed(self) -> ModelCard:
        if min(self.std) <= 0:
            raise ValueError(f"std {list(self.std)} must be > 0")
        if "encoder.safetensors" not in {f.name for f in self.files}:
            raise ValueError("files must list encoder.safetensors")
        return self

    def file(self, name: str) -> FileEntry:
        """The entry for ``name``; KeyError when the card does not list it."""
        for entry in self.files:
            if entry.name == name:
                return entry
        raise KeyError(name)


def json_safe(value: Any) -> Any:
    """Plain JSON values: tensors/arrays become lists, NaN/inf become None (strict parsers reject them)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks so large ONNX files do not load at once."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: Path) -> FileEntry:
    return FileEntry(name=path.name, sha256=sha256_file(path), bytes=path.stat().st_size)


def read_card(export_dir: str | Path) -> ModelCard:
    """Parse and validate ``export_dir/model_card.json``.

    Raises:
        ModelCardError: missing file, invalid JSON, or a field that fails validation; the
            message names the card file and every failing field.
    """
    path = Path(export_dir) / CARD_NAME
    try:
        raw = path.read_text()
    except OSError as exc:
        raise ModelCardError(
            f"{path}: cannot read model card ({exc}); is this a `trackemb export` directory?"
        ) from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelCardError(f"{path}: expected a JSON object, got {type(data).__name__}")
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<card>'}: {e['msg']}" for e in exc.errors()
        )
        raise ModelCardError(f"{path}: invalid model card: {problems}") from exc


def verify_file(export_dir: str | Path, card: ModelCard, name: str) -> Path:
    """Check that ``name`` exists and matches the sha256 the card lists for it.

    Raises:
        ModelCardError: not listed, missing, or the hash differs (file changed after export).
    """
    path = Path(export_dir) / name
    try:
        entry = card.file(name)
    except KeyError:
        raise ModelCardError(f"{Path(export_dir) / CARD_NAME}: does not list {name}") from None
    if not path.is_file():
        raise ModelCardError(f"{path}: listed in the model card but missing")
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise ModelCardError(
            f"{path}: sha256 {actual[:12]}… does not match the model card ({entry.sha256[:12]}…); "
            "the file or the card was changed after export"
        )
    return path


def training_summary(ckpt: dict[str, Any], store_summary: dict[str, Any] | None) -> dict[str, Any]:
    """Scalar counts of the training data (store stats carry per-video lists; the card stays small)."""
    summary = store_summary
    if summary is None:
        summary = next(
            (ckpt[k] for k in ("data_summary", "store_summary") if isinstance(ckpt.get(k), dict)), None
        )
    if summary is None:
        return {"videos": None, "pairs": None, "source": "unknown (pass store_summary to export_encoder)"}
    compact = {
        k: v for k, v in json_safe(summary).items() if v is None or isinstance(v, int | float | str | bool)
    }
    # What training really used (from the run's persisted split), not what the store holds now.
    used = ckpt.get("data_summary")
    if isinstance(used, dict):
        compact.update({k: v for k, v in json_safe(used).items() if isinstance(v, int | float | str | None)})
    return compact


def validation_summary(run_dir: Path, ckpt: dict[str, Any], which: str) -> dict[str, Any]:
    """Held-out validation of the untrained network (step 0), the best and the last validation."""
    state = ckpt.get("best") if isinstance(ckpt.get("best"), dict) else {}
    last_path = run_dir / CKPT_NAME
    if which == "best" and last_path.is_file():  # the best checkpoint's history stops at its own step
        from trackemb.embedding.checkpoint import load_checkpoint

        last = load_checkpoint(last_path)
        state = last.get("best") if isinstance(last.get("best"), dict) else state
    history = state.get("history") or []
    return json_safe({
        "exported": which, "exported_step": ckpt.get("step"), "step_0": state.get("initial"),
        "best": state.get("best"), "last": history[-1] if history else None,
    })  # fmt: skip


def run_metrics(run_dir: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's last metrics, overridden by ``metrics.json``, plus ``evaluation.json`` if present."""
    metrics: dict[str, Any] = dict(ckpt["metrics"]) if isinstance(ckpt.get("metrics"), dict) else {}
    for name, key in (("metrics.json", None), ("evaluation.json", "evaluation")):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelCardError(f"{path}: not valid JSON ({exc})") from exc
        if key is None and isinstance(data, dict):
            metrics.update(data)
        elif key is not None:
            metrics[key] = data.get("methods", data) if isinstance(data, dict) else data
    return json_safe(metrics)

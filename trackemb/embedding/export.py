"""Turn a training run into a self-describing export directory (see DESIGN.md, "Export directory").

Files written: ``encoder.ts`` (TorchScript), ``encoder.safetensors`` (weights only),
``encoder.onnx`` (when onnx is installed and ``cfg.onnx``) and ``model_card.json`` last,
so a directory with a card is complete. Nothing is ever unpickled: checkpoints load with
``weights_only=True`` and exported weights are safetensors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trackemb._version import __version__
from trackemb.atomic import atomic_path, write_text
from trackemb.config import ExportConfig
from trackemb.embedding.card import (
    CARD_NAME,
    ModelCard,
    file_entry,
    read_card,
    run_metrics,
    training_summary,
    validation_summary,
    verify_file,
)
from trackemb.embedding.model import encoder_from_args
from trackemb.embedding.rundir import CKPT_NAME, checkpoint_path
from trackemb.errors import ExportError, ModelCardError, TrainingError

log = logging.getLogger(__name__)

_MODEL_ARG_KEYS = ("arch", "embed_dim", "input_px")


def load_run_checkpoint(run_dir: str | Path, which: str = "best") -> dict[str, Any]:
    """Load a run's best (default) or last checkpoint with ``weights_only=True``; check it describes an encoder.

    Raises:
        ExportError: missing file, a checkpoint that needs pickle or has another schema, or
            missing keys.
    """
    from trackemb.embedding.checkpoint import load_checkpoint

    path = checkpoint_path(run_dir, which)
    if not path.is_file():
        raise ExportError(f"{path}: no checkpoint; train first (`trackemb train`) or pass the run directory")
    try:
        ckpt = load_checkpoint(path)
    except TrainingError as exc:
        raise ExportError(str(exc)) from exc
    missing = [k for k in ("model", "model_args") if k not in ckpt]
    if missing:
        raise ExportError(f"{path}: checkpoint lacks {missing}; was it written by trackemb train?")
    args = ckpt["model_args"]
    if not isinstance(args, dict) or any(k not in args for k in _MODEL_ARG_KEYS):
        raise ExportError(f"{path}: model_args must hold {_MODEL_ARG_KEYS}, got {args!r}")
    return ckpt


def export_layer(ckpt: dict[str, Any]) -> str:
    """The layer to ship: the config's ``embed_layer``, or with "auto" the best validation's layer."""
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    layer = str(config.get("embed_layer", "head"))
    if layer != "auto":
        return layer
    best = (ckpt.get("best") or {}).get("best") or {}
    return str(best.get("layer", "head"))


def encoder_from_checkpoint(run_dir: str | Path, which: str = "best") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a run's trained encoder (CPU, eval mode), outputting its export layer, with its checkpoint."""
    ckpt = load_run_checkpoint(run_dir, which)
    model = encoder_from_args({**ckpt["model_args"], "embed_layer": export_layer(ckpt)})
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        raise ExportError(f"{Path(run_dir) / CKPT_NAME}: weights do not fit model_args: {exc}") from exc
    return model.eval(), ckpt


def _check_close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float) -> None:
    err = (got - want).abs().max().item()
    if got.shape != want.shape or not err <= atol:
        raise ExportError(f"{name}: output differs from the PyTorch model (max abs err {err:.2e} > {atol:g})")


@torch.no_grad()
def _write_torchscript(model: nn.Module, path: Path, input_px: int) -> None:
    example = torch.rand(2, 3, input_px, input_px)
    # torch.jit is deprecated upstream but TorchScript is the export contract; keep the logs clean.
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            try:
                scripted = torch.jit.script(model)
            except (
                Exception
            ) as exc:  # scripting rejects some Python constructs; tracing handles any fixed graph
                log.info("torch.jit.script failed (%s); tracing instead", exc)
                scripted = torch.jit.trace(model, example)
            scripted.save(str(tmp))
            loaded = torch.jit.load(str(tmp), map_location="cpu")
        # Odd batch sizes catch a trace that froze the example's batch dimension.
        for batch in (1, 3):
            x = torch.rand(batch, 3, input_px, input_px)
            _check_close(str(path), loaded(x), model(x), atol=1e-5)


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@torch.no_grad()
def _write_onnx(model: nn.Module, path: Path, input_px: int) -> None:
    example = torch.rand(2, 3, input_px, input_px)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with atomic_path(path) as tmp:
        # The exporter reports progress on stdout and its optimiser logs every pass at INFO.
        with (
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
            _quiet("onnxscript", "onnx_ir"),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=True,
                external_data=False,
                input_names=["images"],
                output_names=["embeddings"],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
        if importlib.util.find_spec("onnxruntime") is not None:
            import onnxruntime as ort

            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            for n in (1, 3):
                x = torch.rand(n, 3, input_px, input_px)
                got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
                _check_close(str(path), got, model(x), atol=1e-4)
        else:
            log.info("onnxruntime not installed; %s written but not verified", path)


def export_encoder(
    run_dir: str | Path,
    out_dir: str | Path,
    cfg: ExportConfig,
    *,
    store_summary: dict[str, Any] | None = None,
) -> Path:
    """Export the encoder of a training run.

    Args:
        run_dir: training output holding ``ckpt.pt`` (and optionally ``metrics.json``).
        out_dir: export directory (created); existing encoder files are replaced.
        cfg: export settings (``cfg.onnx`` toggles the ONNX file).
        store_summary: training data summary for the card, e.g. ``{"videos": 3, "pairs": 120}``.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ExportError: unusable checkpoint, or an exported file that does not reproduce the model.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, ckpt = encoder_from_checkpoint(run_dir, cfg.which)
    args = ckpt["model_args"]
    input_px = int(args["input_px"])

    weights = out_dir / "encoder.safetensors"
    with atomic_path(weights) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp), {"format": "pt"})
    written = [weights]

    _write_torchscript(model, out_dir / "encoder.ts", input_px)
    written.append(out_dir / "encoder.ts")
    if cfg.onnx and all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript")):
        _write_onnx(model, out_dir / "encoder.onnx", input_px)
        written.append(out_dir / "encoder.onnx")
    elif cfg.onnx:
        log.warning("onnx/onnxscript not installed; skipping encoder.onnx")

    with torch.no_grad():
        dim = int(model(torch.rand(1, 3, input_px, input_px)).shape[1])
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    card = ModelCard(
        architecture=str(args["arch"]),
        embedding_dim=dim,
        embedding_layer=model.embed_layer,
        head_dim=int(args["embed_dim"]),
        input_size=(input_px, input_px),
        mean=tuple(float(x) for x in args.get("mean", (0.0, 0.0, 0.0))),
        std=tuple(float(x) for x in args.get("std", (1.0, 1.0, 1.0))),
        training_data=training_summary(ckpt, store_summary),
        metrics=run_metrics(run_dir, ckpt) | {"validation": validation_summary(run_dir, ckpt, cfg.which)},
        trackemb_version=__version__,
        config=config,
        export_config=cfg.model_dump(mode="json"),
        step=int(ckpt["step"]) if "step" in ckpt else None,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        files=[file_entry(p) for p in written],
    )
    card_path = out_dir / CARD_NAME
    write_text(card_path, json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    log.info("exported %s (%s, dim %d, %d px) to %s", run_dir, card.architecture, dim, input_px, out_dir)
    return out_dir


def export_run(
    run_dir: str | Path, out_dir: str | Path, cfg: ExportConfig, store: str | Path | None = None
) -> Path:
    """:func:`export_encoder`, with the model card's training data summarised from ``store`` if given."""
    summary = None
    if store:
        from trackemb.storage.store import open_reader

        with open_reader(store) as reader:
            summary = reader.stats()
    return export_encoder(run_dir, out_dir, cfg, store_summary=summary)


def load_encoder(path: str | Path) -> nn.Module:
    """Rebuild a trainable encoder from an export directory.

    The card is validated and the weights' sha256 checked before anything is built; the
    module comes back on CPU in train mode with ``requires_grad`` set, ready to fine-tune
    (call ``.eval()`` to embed). BatchNorm layers use batch statistics while fine-tuning, even
    for an encoder trained with ``batchnorm = "frozen"``: measured on ``examples/finetune.py``,
    fine-tuning with the frozen statistics did not learn (chance accuracy). Forward: ``(B, 3, H, W) float RGB in [0, 1] -> (B, D)``
    L2-normalised.

    Args:
        path: the export directory (or any file inside it, e.g. ``model_card.json``).

    Raises:
        ModelCardError: invalid card, tampered or missing weights, or weights that do not
            fit the architecture the card names.
    """
    export_dir = Path(path)
    if export_dir.is_file():
        export_dir = export_dir.parent
    card = read_card(export_dir)
    weights_path = verify_file(export_dir, card, "encoder.safetensors")
    model = encoder_from_args({
        "arch": card.architecture, "embed_dim": card.head_dim or card.embedding_dim,
        "input_px": card.input_size[0], "embed_layer": card.embedding_layer,
    })  # fmt: skip
    try:
        model.load_state_dict(load_file(str(weights_path)), strict=True)
    except RuntimeError as exc:
        raise ModelCardError(
            f"{weights_path}: weights do not fit {card.architecture} as described: {exc}"
        ) from exc
    if model.out_dim != card.embedding_dim:
        raise ModelCardError(
            f"{weights_path}: weights do not fit {card.architecture} as described: its {card.embedding_layer} "
            f"outputs {model.out_dim} dims, the card says embedding_dim {card.embedding_dim}"
        )
    rebuilt = getattr(model, "model_args", None)
    if callable(rebuilt):
        got = rebuilt()
        for key in ("mean", "std"):
            if key in got and not torch.allclose(
                torch.tensor(got[key]).flatten(), torch.tensor(getattr(card, key))
            ):
                raise ModelCardError(
                    f"{export_dir / CARD_NAME}: {key} {list(getattr(card, key))} != weights' {got[key]}"
                )
    return model.train()

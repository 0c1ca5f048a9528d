"""``trackemb export``, ``embed`` and ``cluster``: the encoder as files, every patch embedded, clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trackemb.cli import preflight
from trackemb.cli.app import ConfigOpt, app, load
from trackemb.cli.present import RichReporter, err, out, print_files
from trackemb.config import ExportConfig

_E = ExportConfig()


@app.command()
def export(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="Training run directory (holds ckpt.pt).")
    ],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="DIR", help="Export directory (default RUN_DIR/export)."),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(metavar="STORE", help="Store the run was trained on (summarised in the model card)."),
    ] = None,
    config: ConfigOpt = None,
    onnx: Annotated[
        bool | None,
        typer.Option(
            "--onnx/--no-onnx", help=f"Also write encoder.onnx (needs onnx). \\[config default: {_E.onnx}]"
        ),
    ] = None,
) -> None:
    """Write encoder.ts (TorchScript), encoder.safetensors, model_card.json and encoder.onnx."""
    cfg = load(ExportConfig, config, "export", {"onnx": onnx})
    preflight.trained_run(run_dir)
    if store is not None:
        preflight.readable_store(store)
    target = out_dir or run_dir / "export"
    preflight.output_dir(target)
    from trackemb.embedding.export import export_run

    print_files(export_run(run_dir, target, cfg, store), "exported")


@app.command()
def embed(
    export_dir: Annotated[
        Path, typer.Argument(metavar="EXPORT_DIR", help="Directory written by `trackemb export`.")
    ],
    store: Annotated[Path, typer.Argument(metavar="STORE", help="PatchStore whose patches to embed.")],
    batch_size: Annotated[int, typer.Option(metavar="N", help="Patches per forward pass.")] = 256,
    device: Annotated[str, typer.Option(metavar="NAME", help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Embed every stored patch: EXPORT_DIR/embeddings.npy + patches.csv."""
    preflight.export_dir(export_dir)
    preflight.readable_store(store)
    from trackemb.embedding.embed import embed_store

    with RichReporter() as rep:
        emb, _ = embed_store(
            export_dir, store, batch_size=batch_size, device=device,
            progress=lambda d, t, i=None: rep("embed patches", d, t, i or {}),
        )  # fmt: skip
    out.print(
        f"{emb.shape[0]} embeddings of dim {emb.shape[1]} -> {export_dir / 'embeddings.npy'}, "
        f"{export_dir / 'patches.csv'}",
        highlight=False,
    )


@app.command()
def cluster(
    export_dir: Annotated[
        Path,
        typer.Argument(metavar="EXPORT_DIR", help="Export directory holding embeddings.npy + patches.csv."),
    ],
    k: Annotated[
        str,
        typer.Option(
            metavar="K",
            help="Number of clusters, or 'auto': the best silhouette for k in the config's "
            f"\\[export] k_min..k_max ({_E.k_min}..{_E.k_max} by default).",
        ),
    ] = "auto",
    store: Annotated[
        Path | None,
        typer.Option(
            metavar="STORE",
            help="Store for montage thumbnails (default: the one recorded by `trackemb embed` in embed.json).",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """k-means on the embeddings: cluster column in patches.csv, a montage PNG per cluster, a projector."""
    if k != "auto" and not k.isdigit():
        preflight.fail(f"--k must be a whole number or 'auto', not {k!r}")
    cfg = load(ExportConfig, config, "export", {"k": k if k == "auto" else int(k)})
    preflight.embeddings(export_dir)
    if store is not None:
        preflight.readable_store(store)
    from trackemb.embedding.cluster import cluster_embeddings

    result = cluster_embeddings(export_dir, cfg, store_path=store).as_dict()
    err.print(f"projector: tensorboard --logdir {export_dir / 'projector'}", markup=False, highlight=False)
    out.print_json(
        data={key: v for key, v in result.items() if not isinstance(v, list | dict) or key == "sizes"}
    )

"""`trackemb` command line: harvest | inspect | train | export | embed | cluster | evaluate | pipeline | serve.

Every command calls the same flows/library functions the Prefect deployments use. Settings
come from an optional TOML file (tables ``[harvest]``, ``[train]``, ``[export]``) and the
flags below, flags winning. Heavy imports happen inside the commands so ``--help`` is fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from trackemb import progress as progress_hooks
from trackemb.config import ConfigError, ExportConfig, HarvestConfig, TrainConfig, load_config
from trackemb.errors import TrackembError

app = typer.Typer(
    name="trackemb",
    help="Self-supervised embeddings from unlabelled video: track moving objects, harvest positive pairs "
    "into LMDB, train a triplet-loss Siamese encoder, export it with clustered embeddings.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML file with \\[harvest], \\[train] and \\[export] tables; flags override it.",
    ),
]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "trackemb")
    for noisy in ("httpx", "urllib3", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _load(cls: type, config: Path | None, section: str, overrides: dict[str, Any]) -> Any:
    try:
        return load_config(cls, config, overrides, section=section)
    except ConfigError as exc:
        _fail(str(exc))


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    _setup_logging(verbose)


class _RichReporter:
    """Maps library progress callbacks onto one rich progress bar per stage."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            disable=not console.is_terminal and os.environ.get("CI") == "true",
        )
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int, info: dict[str, Any]) -> None:
        text = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, info=text)
        self.progress.update(self.tasks[stage], completed=done, total=total, info=text)

    def __enter__(self) -> _RichReporter:
        self.progress.start()
        progress_hooks.install(self)
        return self

    def __exit__(self, *exc: object) -> None:
        progress_hooks.install(None)
        self.progress.stop()


def _print_harvest(summary: dict[str, Any]) -> None:
    table = Table(title=f"harvest of {summary['video_dir']} -> {summary['store']}")
    for col in ("video", "status", "tracks", "pairs", "seconds", "error"):
        table.add_column(col, justify="right" if col in ("tracks", "pairs", "seconds") else "left")
    for row in summary["videos"]:
        style = {"failed": "red", "skipped": "dim"}.get(row["status"], "")
        table.add_row(
            Path(row["path"]).name,
            row["status"],
            str(row["tracks"]),
            str(row["pairs"]),
            f"{row['seconds']:.1f}",
            row["error"] or row.get("note", ""),
            style=style,
        )
    console.print(table)
    console.print(
        f"{summary['done']} harvested, {summary['skipped']} already done, "
        f"{summary.get('duplicates', 0)} duplicate content, {summary['failed']} failed; "
        f"{summary['pairs_added']} pairs added, {summary['triplets']} triplets in the store."
    )


def _fail_if_locked(store: Path) -> None:
    """Refuse at once (before Prefect starts) when another harvest holds the store."""
    from trackemb.storage.lock import WriterLock

    probe = WriterLock(store)
    try:
        probe.acquire(timeout_s=0)
    except TrackembError as exc:
        _fail(str(exc))
    probe.release()


@app.command()
def harvest(
    video_dir: Annotated[
        Path, typer.Argument(help="Folder of videos (searched recursively) or one video file.")
    ],
    store: Annotated[
        Path, typer.Option("--store", "-s", help="PatchStore directory (LMDB); created if missing.")
    ],
    config: ConfigOpt = None,
    pattern: Annotated[str, typer.Option(help="Glob under VIDEO_DIR selecting files.")] = "**/*",
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes harvesting videos at once (default: one per core); 0 harvests in this "
            "process. A worker that crashes (a decoder's segfault) costs only its video."
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Exit 1 if any video fails (default: warn, store the error, go on).")
    ] = False,
    dask_address: Annotated[
        str | None,
        typer.Option(
            help="Run the per-video tasks on an existing Dask cluster (tcp://host:8786); each worker writes its own shard."
        ),
    ] = None,
    lock_timeout_s: Annotated[
        float, typer.Option(help="Wait this long for another harvest holding the store.")
    ] = 0.0,
    settle_s: Annotated[
        float,
        typer.Option(help="Leave files changed in the last N seconds (still being copied?) for a later run."),
    ] = 0.0,
    stride: Annotated[int | None, typer.Option(help="Analyse every Nth frame.")] = None,
    track_len: Annotated[int | None, typer.Option(help="Frames per track (about one second).")] = None,
    patch_px: Annotated[int | None, typer.Option(help="Side of stored patches in pixels.")] = None,
    backend: Annotated[str | None, typer.Option(help="Frame reader: auto, decord or opencv.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the run summary as JSON here.")
    ] = None,
) -> None:
    """Track moving objects in every video and store positive pairs + other-video triplets (a Prefect flow).

    Bad files never stop the run: each gets an error record (file and cause) in the store and in
    the summary. Re-running skips videos already stored (matched by content hash).
    """
    cfg = _load(
        HarvestConfig,
        config,
        "harvest",
        {
            "decode.frame_stride": stride,
            "track.track_len_frames": track_len,
            "patch_px": patch_px,
            "decode.backend": backend,
        },
    )
    if store.is_dir() and lock_timeout_s == 0:
        _fail_if_locked(store)
    from prefect.task_runners import ThreadPoolTaskRunner

    from trackemb.flows.harvest import HarvestFailedError, harvest_flow
    from trackemb.pool import default_workers

    n_workers = default_workers() if workers is None else workers
    if n_workers < 0:
        _fail(f"--workers must be 0 or more, got {n_workers}")
    runner: Any = ThreadPoolTaskRunner(max_workers=n_workers + 1)  # threads only wait for the processes
    if dask_address:
        from prefect_dask import DaskTaskRunner

        runner = DaskTaskRunner(address=dask_address)
    flow_fn = harvest_flow.with_options(task_runner=runner)
    try:
        summary = flow_fn(
            str(video_dir),
            str(store),
            cfg,
            pattern=pattern,
            strict=strict,
            shards=bool(dask_address),
            lock_timeout_s=lock_timeout_s,
            workers=n_workers,
            settle_s=settle_s,
        )
    except HarvestFailedError as exc:
        # Strict mode: everything good is stored; report it all, then exit 1.
        if exc.summary:
            _print_harvest(exc.summary)
            if json_out:
                json_out.write_text(json.dumps(exc.summary, indent=2))
        _fail(str(exc), code=1)
    except (TrackembError, FileNotFoundError) as exc:
        _fail(str(exc))
    _print_harvest(summary)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2))


@app.command()
def inspect(
    store: Annotated[Path, typer.Argument(help="PatchStore directory.")],
    montage: Annotated[
        Path | None, typer.Option(help="Montage PNG of random positive pairs (default: STORE/pairs.png).")
    ] = None,
    pairs: Annotated[int, typer.Option(help="Pairs in the montage.")] = 16,
    seed: Annotated[int, typer.Option(help="Which random pairs.")] = 0,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the stats as JSON instead of tables.")
    ] = False,
) -> None:
    """Counts per video, error records, and a montage PNG of random positive pairs (first | last patch)."""
    from trackemb.storage.inspect import stats_tables, store_montage
    from trackemb.storage.store import open_reader

    if not store.exists():
        _fail(f"{store}: no such store")
    try:
        with open_reader(store) as reader:
            stats = reader.stats()
    except TrackembError as exc:
        _fail(str(exc))
    if json_out:
        print(json.dumps(stats, indent=2, default=str))
        return
    for table in stats_tables(stats):
        console.print(table)
    if stats.get("pairs", 0):
        shown = min(pairs, stats["pairs"])
        out = store_montage(store, montage or store / "pairs.png", n_pairs=shown, seed=seed)
        console.print(f"montage of {shown} random positive pairs (first | last patch of a track): {out}")


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, int | float):
            table.add_row(key, f"{value:.4g}")
    console.print(table)


@app.command()
def train(
    store: Annotated[Path, typer.Argument(help="PatchStore written by `trackemb harvest`.")],
    run_dir: Annotated[
        Path, typer.Option("--run-dir", "-o", help="Where checkpoints, config.json and TensorBoard logs go.")
    ],
    config: ConfigOpt = None,
    resume: Annotated[
        bool, typer.Option(help="Continue exactly where the last checkpoint in RUN_DIR stopped.")
    ] = False,
    allow_changes: Annotated[
        bool,
        typer.Option(
            help="With --resume: continue even though steps, schedule, data settings or the number of "
            "processes differ from the checkpoint's (refused by default: not an exact continuation)."
        ),
    ] = False,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps in total.")] = None,
    batch_pairs: Annotated[
        int | None, typer.Option(help="Positive pairs per batch (from many videos).")
    ] = None,
    arch: Annotated[
        str | None, typer.Option(help="Backbone: resnet18 (default), resnet34, resnet50, smallcnn.")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    margin: Annotated[float | None, typer.Option(help="Triplet margin on cosine distance.")] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = None,
    num_workers: Annotated[int | None, typer.Option(help="DataLoader worker processes.")] = None,
) -> None:
    """Train the Siamese triplet-loss encoder (a Prefect flow); watch it with `tensorboard --logdir RUN_DIR`."""
    cfg = _load(
        TrainConfig,
        config,
        "train",
        {
            "steps": steps,
            "batch_pairs": batch_pairs,
            "arch": arch,
            "lr": lr,
            "mine.margin": margin,
            "device": device,
            "num_workers": num_workers,
        },
    )
    from trackemb.flows.train import train_flow

    try:
        with _RichReporter():
            result = train_flow(str(store), str(run_dir), cfg, resume=resume, allow_changes=allow_changes)
    except TrackembError as exc:
        _fail(str(exc))
    _print_metrics(f"training run {run_dir} (step {result.get('step')})", result.get("metrics", {}))
    console.print(f"checkpoint: {result.get('checkpoint')}\ntensorboard --logdir {run_dir}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Training run directory (holds ckpt.pt).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Export directory (default RUN_DIR/export).")
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help="Store the run was trained on (summarised in the model card).")
    ] = None,
    config: ConfigOpt = None,
    onnx: Annotated[bool | None, typer.Option(help="Also write encoder.onnx (needs onnx installed).")] = None,
) -> None:
    """Write encoder.ts (TorchScript), encoder.safetensors, model_card.json and encoder.onnx."""
    cfg = _load(ExportConfig, config, "export", {"onnx": onnx})
    from trackemb.embedding.export import export_encoder

    summary = None
    if store:
        from trackemb.storage.store import open_reader

        with open_reader(store) as reader:
            summary = reader.stats()
    try:
        out_dir = export_encoder(run_dir, out or run_dir / "export", cfg, store_summary=summary)
    except TrackembError as exc:
        _fail(str(exc))
    for path in sorted(Path(out_dir).iterdir()):
        console.print(f"  {path}")


@app.command()
def embed(
    export_dir: Annotated[Path, typer.Argument(help="Directory written by `trackemb export`.")],
    store: Annotated[Path, typer.Argument(help="PatchStore whose patches to embed.")],
    batch_size: Annotated[int, typer.Option(help="Patches per forward pass.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Embed every stored patch: EXPORT_DIR/embeddings.npy + patches.csv."""
    from trackemb.embedding.embed import embed_store

    with _RichReporter() as rep:
        emb, _ = embed_store(
            export_dir,
            store,
            batch_size=batch_size,
            device=device,
            progress=lambda d, t, i=None: rep("embed patches", d, t, i or {}),
        )
    console.print(
        f"{emb.shape[0]} embeddings of dim {emb.shape[1]} -> {export_dir / 'embeddings.npy'}, {export_dir / 'patches.csv'}"
    )


@app.command()
def cluster(
    export_dir: Annotated[
        Path, typer.Argument(help="Export directory holding embeddings.npy + patches.csv.")
    ],
    k: Annotated[
        str, typer.Option(help="Number of clusters, or 'auto' (best silhouette in k-min..k-max).")
    ] = "auto",
    store: Annotated[
        Path | None,
        typer.Option(
            help="Store for montage thumbnails (default: the one recorded by `trackemb embed` in embed.json)."
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """k-means on the embeddings: cluster column in patches.csv, a montage PNG per cluster, a projector."""
    cfg = _load(ExportConfig, config, "export", {"k": k if k == "auto" else int(k)})
    from trackemb.embedding.cluster import cluster_embeddings

    result = cluster_embeddings(export_dir, cfg, store_path=store).as_dict()
    console.print_json(
        data={k: v for k, v in result.items() if not isinstance(v, list | dict) or k == "sizes"}
    )


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Training run directory (ckpt.pt).")],
    store: Annotated[Path, typer.Option(help="PatchStore holding the held-out videos.")],
    out: Annotated[Path | None, typer.Option(help="Where evaluation.md/json go (default RUN_DIR).")] = None,
) -> None:
    """R@1, R@5, MAP@R and NMI on held-out tracks, next to a random-init encoder and raw pixels."""
    from trackemb.embedding.evaluate import evaluate_run

    report = evaluate_run(run_dir, store, out_dir=out or run_dir)
    console.print(report.get("markdown", json.dumps(report, indent=2, default=str)))


@app.command()
def pipeline(
    video_dir: Annotated[Path, typer.Argument(help="Folder of videos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: patches.lmdb, runs/, export/.")],
    config: ConfigOpt = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (overrides [train] steps).")] = None,
    strict: Annotated[bool, typer.Option(help="Fail if any video fails to harvest.")] = False,
) -> None:
    """harvest -> train -> export -> cluster -> evaluate as one Prefect flow; re-runs skip finished work."""
    hcfg = _load(HarvestConfig, config, "harvest", {})
    tcfg = _load(TrainConfig, config, "train", {"steps": steps})
    ecfg = _load(ExportConfig, config, "export", {})
    from trackemb.flows.pipeline import pipeline_flow

    try:
        with _RichReporter():
            result = pipeline_flow(str(video_dir), str(out), hcfg, tcfg, ecfg, strict=strict)
    except TrackembError as exc:
        _fail(str(exc))
    console.print_json(data={k: result[k] for k in ("store", "run_dir", "export_dir", "harvest")})
    evaluation = result.get("export", {}).get("evaluation", {})
    if evaluation.get("markdown"):
        console.print(evaluation["markdown"])


@app.command()
def serve(
    video_dir: Annotated[Path, typer.Argument(help="Folder to watch; new videos are harvested on each run.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (as for `pipeline`).")] = Path(
        "runs/served"
    ),
    interval: Annotated[int | None, typer.Option(help="Seconds between harvest runs.")] = 600,
    cron: Annotated[str | None, typer.Option(help="Cron schedule instead of --interval.")] = None,
    retrain: Annotated[
        str,
        typer.Option(
            help="never: harvest only; manual: also serve the pipeline, run it from the UI; "
            "on_new_videos: the schedule runs the pipeline, which retrains only when the store changed."
        ),
    ] = "manual",
    config: ConfigOpt = None,
) -> None:
    """Serve Prefect deployments over VIDEO_DIR until interrupted (runs against PREFECT_API_URL, or a temporary local API)."""
    if retrain not in ("never", "manual", "on_new_videos"):
        _fail(f"--retrain must be never, manual or on_new_videos, not {retrain!r}")
    from trackemb.flows.deploy import serve_folder

    try:
        serve_folder(
            str(video_dir),
            str(out),
            interval_s=None if cron else interval,
            cron=cron,
            retrain_policy=retrain,
            config=str(config) if config else None,  # type: ignore[arg-type]
        )
    except ConfigError as exc:
        _fail(str(exc))


def main() -> None:
    try:
        app()
    except TrackembError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()

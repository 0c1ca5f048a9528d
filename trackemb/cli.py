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
    typer.Option("--config", "-c", help="TOML file with [harvest], [train] and [export] tables; flags override it."),
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
            Path(row["path"]).name, row["status"], str(row["tracks"]), str(row["pairs"]), f"{row['seconds']:.1f}",
            row["error"], style=style,
        )
    console.print(table)
    console.print(
        f"{summary['done']} harvested, {summary['skipped']} already done, {summary['failed']} failed; "
        f"{summary['pairs_added']} pairs added, {summary['triplets']} triplets in the store."
    )


@app.command()
def harvest(
    video_dir: Annotated[Path, typer.Argument(help="Folder of videos (searched recursively) or one video file.")],
    store: Annotated[Path, typer.Option("--store", "-s", help="PatchStore directory (LMDB); created if missing.")],
    config: ConfigOpt = None,
    pattern: Annotated[str, typer.Option(help="Glob under VIDEO_DIR selecting files.")] = "**/*",
    workers: Annotated[int, typer.Option(help="Videos harvested at once (threads).")] = 2,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any video fails (default: warn, store the error, go on).")] = False,
    dask_address: Annotated[
        str | None, typer.Option(help="Run the per-video tasks on an existing Dask cluster (tcp://host:8786); each worker writes its own shard.")
    ] = None,
    lock_timeout_s: Annotated[float, typer.Option(help="Wait this long for another harvest holding the store.")] = 0.0,
    stride: Annotated[int | None, typer.Option(help="Analyse every Nth frame.")] = None,
    track_len: Annotated[int | None, typer.Option(help="Frames per track (about one second).")] = None,
    patch_px: Annotated[int | None, typer.Option(help="Side of stored patches in pixels.")] = None,
    backend: Annotated[str | None, typer.Option(help="Frame reader: auto, decord or opencv.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the run summary as JSON here.")] = None,
) -> None:
    """Track moving objects in every video and store positive pairs + other-video triplets (a Prefect flow).

    Bad files never stop the run: each gets an error record (file and cause) in the store and in
    the summary. Re-running skips videos already stored (matched by content hash).
    """
    cfg = _load(
        HarvestConfig, config, "harvest",
        {"decode.frame_stride": stride, "track.track_len_frames": track_len, "patch_px": patch_px, "decode.backend": backend},
    )
    from trackemb.flows.harvest import HarvestFailedError, harvest_flow

    flow_fn = harvest_flow
    from prefect.task_runners import ThreadPoolTaskRunner

    runner: Any = ThreadPoolTaskRunner(max_workers=workers)
    if dask_address:
        from prefect_dask import DaskTaskRunner

        runner = DaskTaskRunner(address=dask_address)
    flow_fn = harvest_flow.with_options(task_runner=runner)
    try:
        summary = flow_fn(
            str(video_dir), str(store), cfg, pattern=pattern, strict=strict, shards=bool(dask_address),
            lock_timeout_s=lock_timeout_s,
        )
    except HarvestFailedError as exc:
        _fail(str(exc), code=1)
    except (TrackembError, FileNotFoundError) as exc:
        _fail(str(exc))
    _print_harvest(summary)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2))


@app.command()
def inspect(
    store: Annotated[Path, typer.Argument(help="PatchStore directory.")],
    montage: Annotated[Path | None, typer.Option(help="Montage PNG of random positive pairs (default: STORE/pairs.png).")] = None,
    pairs: Annotated[int, typer.Option(help="Pairs in the montage.")] = 16,
    seed: Annotated[int, typer.Option(help="Which random pairs.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the stats as JSON instead of tables.")] = False,
) -> None:
    """Counts per video, error records, and a montage PNG of random positive pairs (first | last patch)."""
    from trackemb.storage.inspect import stats_tables, store_montage
    from trackemb.storage.store import open_reader

    if not store.exists():
        _fail(f"{store}: no such store")
    try:
        reader = open_reader(store)
        stats = reader.stats()
    except TrackembError as exc:
        _fail(str(exc))
    if json_out:
        print(json.dumps(stats, indent=2, default=str))
        return
    for table in stats_tables(stats):
        console.print(table)
    if stats.get("pairs", 0):
        out = store_montage(store, montage or store / "pairs.png", n_pairs=pairs, seed=seed)
        console.print(f"montage of {pairs} random positive pairs: {out}")


def main() -> None:
    try:
        app()
    except TrackembError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()

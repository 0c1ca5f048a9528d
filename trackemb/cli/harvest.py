"""``trackemb harvest`` and ``trackemb inspect``: videos into a PatchStore, and a look inside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from trackemb.cli import preflight
from trackemb.cli.app import ConfigOpt, app, fail, load, prefect_logging
from trackemb.cli.present import err, out, print_harvest
from trackemb.config import HarvestConfig
from trackemb.errors import HarvestFailedError, TrackembError

_H = HarvestConfig()


@app.command()
def harvest(
    video_dir: Annotated[
        Path,
        typer.Argument(
            metavar="VIDEO_DIR", help="Folder of videos (searched recursively) or one video file."
        ),
    ],
    store: Annotated[
        Path,
        typer.Option("--store", "-s", metavar="DIR", help="PatchStore directory (LMDB); created if missing."),
    ],
    config: ConfigOpt = None,
    pattern: Annotated[
        str, typer.Option(metavar="GLOB", help="Glob under VIDEO_DIR selecting files.")
    ] = "**/*",
    workers: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Worker processes harvesting videos at once (default: one per core); 0 harvests in this "
            "process. A worker that crashes (a decoder's segfault) costs only its video.",
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Exit 1 if any video fails (default: warn, store the error, go on)."),
    ] = False,
    dask_address: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Run the per-video tasks on an existing Dask cluster (tcp://host:8786); each worker writes "
            "its own shard.",
        ),
    ] = None,
    lock_timeout_s: Annotated[
        float, typer.Option(metavar="SECONDS", help="Wait this long for another harvest holding the store.")
    ] = 0.0,
    settle_s: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Leave files changed in the last N seconds (still being copied?) for a later run.",
        ),
    ] = 0.0,
    stride: Annotated[
        int | None,
        typer.Option(
            metavar="N", help=f"Analyse every Nth frame. \\[config default: {_H.decode.frame_stride}]"
        ),
    ] = None,
    track_len: Annotated[
        int | None,
        typer.Option(
            metavar="FRAMES",
            help=f"Frames per track (about one second). \\[config default: {_H.track.track_len_frames}]",
        ),
    ] = None,
    patch_px: Annotated[
        int | None,
        typer.Option(
            metavar="PX", help=f"Side of stored patches in pixels. \\[config default: {_H.patch_px}]"
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Frame reader: auto (OpenCV first, decord as fallback per file), decord or opencv. "
            f"\\[config default: {_H.decode.backend}]",
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="Also write the run summary as JSON here.")
    ] = None,
) -> None:
    """Track moving objects in every video and store positive pairs + other-video triplets (a Prefect flow).

    Bad files never stop the run: each gets an error record (file and cause) in the store and in the summary. Re-running skips videos already stored (matched by content hash).
    """
    overrides = {
        "decode.frame_stride": stride,
        "track.track_len_frames": track_len,
        "patch_px": patch_px,
        "decode.backend": backend,
    }
    cfg = load(HarvestConfig, config, "harvest", overrides)
    if workers is not None and workers < 0:
        fail(f"--workers must be 0 or more, got {workers}")
    preflight.video_source(video_dir, pattern)
    preflight.writable_store(store)
    if store.is_dir() and lock_timeout_s == 0:
        preflight.store_is_free(store)
    from prefect.task_runners import ThreadPoolTaskRunner

    from trackemb.flows.harvest import harvest_flow
    from trackemb.harvest.pool import default_workers

    prefect_logging()
    n_workers = default_workers() if workers is None else workers
    runner: Any = ThreadPoolTaskRunner(max_workers=n_workers + 1)  # threads only wait for the processes
    if dask_address:
        from prefect_dask import DaskTaskRunner

        runner = DaskTaskRunner(address=dask_address)
    try:
        summary = harvest_flow.with_options(task_runner=runner)(
            str(video_dir), str(store), cfg, pattern=pattern, strict=strict,
            shards=bool(dask_address), lock_timeout_s=lock_timeout_s, workers=n_workers, settle_s=settle_s,
        )  # fmt: skip
    except HarvestFailedError as exc:
        # Strict mode: everything good is stored; report it all, then exit 1.
        if exc.summary:
            _show(exc.summary, json_out)
        fail(str(exc), code=1)
    _show(summary, json_out)


def _show(summary: dict[str, Any], json_out: Path | None) -> None:
    print_harvest(summary)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2))


@app.command()
def inspect(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="PatchStore directory.")],
    montage: Annotated[
        Path | None,
        typer.Option(metavar="PNG", help="Montage of random positive pairs (default: STORE/pairs.png)."),
    ] = None,
    pairs: Annotated[int, typer.Option(metavar="N", help="Pairs in the montage.")] = 16,
    seed: Annotated[int, typer.Option(metavar="N", help="Which random pairs.")] = 0,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the stats as JSON instead of tables.")
    ] = False,
) -> None:
    """Counts per video, error records, and a montage PNG of random positive pairs (first | last patch)."""
    preflight.readable_store(store)
    from trackemb.storage.inspect import stats_tables, store_montage
    from trackemb.storage.store import open_reader

    try:
        with open_reader(store) as reader:
            stats = reader.stats()
    except TrackembError as exc:
        fail(str(exc))
    if json_out:
        print(json.dumps(stats, indent=2, default=str))
        return
    for table in stats_tables(stats):
        out.print(table)
    if stats.get("pairs", 0):
        shown = min(pairs, stats["pairs"])
        path = store_montage(store, montage or store / "pairs.png", n_pairs=shown, seed=seed)
        out.print(
            f"montage of {shown} random positive pairs (first | last patch of a track): {path}",
            highlight=False,
        )
    else:
        err.print("[yellow]warning:[/] no positive pairs in this store; no montage written")

"""The run summary of a harvest: one function builds it, the CLI table, ``--json`` and the Prefect
artifact all render the same rows.

A row names its video by a short name (relative to the harvested folder) and keeps the
full path for a footnote; failures carry a stable ``error_kind`` and the cause without the
path. ``warnings`` says when the store cannot be trained on yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackemb import fsnames
from trackemb.storage.records import VideoRecord, frames_text, rejected_text

if TYPE_CHECKING:
    from trackemb.tracking.outcome import HarvestOutcome

# Columns of the table view, in order: (row key, header, right-aligned).
COLUMNS: list[tuple[str, str, bool]] = [
    ("file", "video", False),
    ("status", "status", False),
    ("frames_shown", "frames", True),  # decoded/declared
    ("motion", "motion", False),
    ("rejected_shown", "rejected frames", False),  # per rule
    ("tracks", "tracks", True),
    ("pairs", "pairs", True),
    ("seconds", "seconds", True),
    ("error_kind", "error kind", False),
    ("cause", "error / note", False),
]


def short_name(path: str, root: str) -> str:
    """``path`` relative to the harvested folder (just the name for a single file)."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return Path(path).name
    return str(rel) if str(rel) != "." else Path(path).name


def summary_row(outcome: HarvestOutcome, root: str) -> dict[str, Any]:
    """One video's row: counts, timing, for a failure its kind and cause, for a duplicate a note."""
    rec = outcome.record if outcome.status in ("done", "failed") else None
    failed = rec is not None and outcome.status == "failed"
    error = rec.error if failed else ""
    path = fsnames.display(outcome.path)  # valid UTF-8 for JSON, Prefect and terminals
    short = short_name(path, fsnames.display(root))
    duplicate_of = getattr(outcome, "duplicate_of", None)
    return {
        "path": path,
        "file": short,
        "sha": outcome.sha,
        "status": outcome.status,
        "tracks": rec.n_tracks if rec else 0,
        "pairs": rec.n_pairs if rec else 0,
        "seconds": rec.seconds if rec else 0.0,
        "error": error,
        "error_kind": rec.error_kind if failed else "",
        # The full path is in the footnote; decoders quoting it again would only push the cause off-screen.
        "cause": error.removeprefix(f"{path}:").strip().replace(path, short),
        "note": f"same content as {fsnames.display(duplicate_of)}" if duplicate_of else "",
        **_yield(rec if rec is not None and outcome.status == "done" else None),
    }


def _yield(rec: VideoRecord | None) -> dict[str, Any]:
    """Yield fields of a done video (decoded/declared frames, motion path, frames rejected per
    rule, warning); blanks for other rows."""
    fields = (rec or VideoRecord("", "", "")).yield_columns()
    shown = {"frames_shown": frames_text(fields), "rejected_shown": rejected_text(fields)} if rec else {}
    return fields | ({"frames_shown": "", "rejected_shown": ""} | shown)


def settling_row(path: str, age_s: float, root: str) -> dict[str, Any]:
    """A file still changing (being copied?) that a later run will harvest."""
    shown = fsnames.display(path)
    note = f"changed {age_s:.1f} s ago (still being written?); harvested on a later run"
    return {"path": shown, "file": short_name(shown, fsnames.display(root)), "sha": "", "status": "settling",
            "tracks": 0, "pairs": 0, "seconds": 0.0, "error": "", "error_kind": "", "cause": "", "note": note}  # fmt: skip


def training_warnings(videos_with_pairs: int) -> list[str]:
    """Why a store cannot be trained on yet (training draws negatives from *other* videos)."""
    if videos_with_pairs >= 2:
        return []
    return [
        f"the store holds {videos_with_pairs} video(s) with positive pairs; training needs at least two "
        "(negatives come from other videos): harvest more videos into it before `trackemb train`"
    ]


def build_summary(
    video_dir: str,
    store: str,
    outcomes: Sequence[HarvestOutcome],
    *,
    videos_total: int,
    triplets: int,
    videos_with_pairs: int,
    settling: dict[str, float] | None = None,
    superseded: Sequence[str] = (),
) -> dict[str, Any]:
    """The summary a harvest returns (and ``--json`` writes): totals, one row per video, warnings.

    Args:
        settling: files left for a later run (still changing), with their age in seconds.
        superseded: paths whose older content's records this run replaced (the file changed).
    """
    settling = settling or {}
    rows = [summary_row(o, video_dir) for o in outcomes]
    rows += [settling_row(p, age, video_dir) for p, age in settling.items()]
    return {
        "video_dir": fsnames.display(video_dir),
        "store": str(store),
        "videos_total": videos_total,
        "done": sum(o.status == "done" for o in outcomes),
        "skipped": sum(o.status == "skipped" for o in outcomes),
        "duplicates": sum(o.status == "duplicate" for o in outcomes),
        "failed": sum(o.status == "failed" for o in outcomes),
        "settling": len(settling),
        "superseded": list(superseded),
        "pairs_added": sum(r["pairs"] for r in rows if r["status"] == "done"),
        "triplets": triplets,
        "videos_with_pairs": videos_with_pairs,
        "warnings": training_warnings(videos_with_pairs)
        + [f"{r['file']}: {r['warning']}" for r in rows if r.get("warning")],
        "videos": rows,
    }


def totals_line(summary: dict[str, Any]) -> str:
    extra = "".join(
        f", {summary[key]} {label}"
        for key, label in (("duplicates", "duplicate content"), ("settling", "still changing"))
        if summary.get(key)
    )
    return (
        f"{summary['done']} harvested, {summary['skipped']} already done, {summary['failed']} failed{extra}; "
        f"{summary['pairs_added']} pairs added, {summary['triplets']} triplets in the store."
    )


def cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key, "")
    if key == "cause" and not value:
        value = row.get("note", "")
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def md_escape(text: str) -> str:
    """File names are user data: keep pipes and newlines from breaking a markdown table."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def summary_markdown(summary: dict[str, Any]) -> str:
    """The Prefect ``harvest-summary`` artifact: totals, warnings, the table, full paths as footnotes."""
    lines = [
        f"# Harvest of `{md_escape(summary['video_dir'])}`",
        "",
        f"Store: `{md_escape(summary['store'])}` — {totals_line(summary)}",
        "",
    ]
    lines += [f"> **Warning:** {w}" for w in summary.get("warnings", [])]
    lines += [
        "",
        "| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|" + "|".join("---:" if right else "---" for _, _, right in COLUMNS) + "|",
    ]
    for n, row in enumerate(summary["videos"], 1):
        cells = [md_escape(cell(row, key)) for key, _, _ in COLUMNS]
        cells[0] = f"{cells[0]} [{n}]"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Files:", ""]
    lines += [f"{n}. `{md_escape(row['path'])}`" for n, row in enumerate(summary["videos"], 1)]
    return "\n".join(lines) + "\n"

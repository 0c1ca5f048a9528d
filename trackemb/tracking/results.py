"""What harvesting one video produces: plain dataclasses of builtins, no storage format.

``harvest_video`` returns a :class:`VideoHarvest`; the store (``trackemb.storage``) encodes
these records with msgpack and lays out its keys. They hold only builtin types, so
msgpack round-trips them exactly. A patch is named by :func:`patch_key`, deterministic
from the video's content hash, the track and the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trackemb import fsnames

# A box is (x, y, w, h) in full-resolution pixels of the source video.
Box = tuple[float, float, float, float]
# Hex characters of a video's content hash that prefix its patch keys (and every per-video store key).
SHA16 = 16


@dataclass
class VideoRecord:
    """One source video. ``sha`` is the content hash (hex) that keys all of its records."""

    sha: str
    path: str
    status: str  # "done" | "failed"
    frames: int = 0  # frames decoded (the decoder is read until it stops)
    declared_frames: int = 0  # frames the container declares (0: unknown); may differ from `frames`
    fps: float = 0.0
    width: int = 0
    height: int = 0
    backend: str = ""  # reader that decoded it: "decord" | "opencv"
    n_tracks: int = 0
    n_patches: int = 0
    n_pairs: int = 0
    seconds: float = 0.0  # wall time of the harvest
    error: str = ""  # readable cause when status == "failed"
    error_kind: str = ""  # short machine-readable class, e.g. "no_video_stream"
    crashes: int = 0  # times a harvest worker process died on it ("crashed"; retried once)
    # A file name that is not valid UTF-8 is kept exactly here; ``path`` then shows it with
    # \xNN escapes (msgpack and JSON need valid UTF-8). See trackemb/fsnames.py.
    path_bytes: bytes = b""
    also_at: list[str] = field(default_factory=list)  # other paths with identical content
    # Yield: how the harvest looked for movers and what it threw away (stores before these
    # fields read them as the defaults).
    motion_path: str = ""  # "flow" (sparse flow, camera compensated) | "background" (fixed camera)
    camera_px: float = 0.0  # median camera motion per frame in the probe (working px; -1: unknown)
    analysed: int = 0  # frames on which motion discovery ran
    rejected: dict[str, int] = field(default_factory=dict)  # rule -> analysed frames it rejected
    candidates: int = 0  # tracks followed before the track filters
    warning: str = ""  # e.g. visible motion but 0 tracks, naming the rule

    def __post_init__(self) -> None:
        if not fsnames.is_utf8(self.path):
            self.path_bytes, self.path = fsnames.exact_bytes(self.path), fsnames.display(self.path)

    @property
    def fs_path(self) -> str:
        """The path as the file system knows it (exact, also for non-UTF-8 names)."""
        return fsnames.from_stored(self.path, self.path_bytes)

    def yield_columns(self) -> dict[str, Any]:
        """The per-video yield fields of harvest summaries (``--json``) and ``inspect``."""
        return {
            "frames": self.frames,
            "declared_frames": self.declared_frames,
            "motion": self.motion_path,
            "analysed": self.analysed,
            "rejected": dict(self.rejected),
            "candidates": self.candidates,
            "warning": self.warning,
        }


def frames_text(row: dict[str, Any]) -> str:
    """``decoded/declared`` frames of a summary row ("?" where the container declares none)."""
    return f"{row.get('frames', 0)}/{row.get('declared_frames') or '?'}"


# Short labels of the rules for narrow tables (the JSON keeps the full names).
_RULE_LABEL = {"camera_motion": "camera", "too_little_motion": "no motion", "no_seeds": "no seeds"}


def rejected_text(row: dict[str, Any]) -> str:
    """Frames rejected per rule of a summary row, e.g. ``camera 3, no motion 40`` ("-" for none)."""
    counts = sorted((row.get("rejected") or {}).items())
    return ", ".join(f"{_RULE_LABEL.get(k, k)} {v}" for k, v in counts if v) or "-"


@dataclass
class TrackRecord:
    video_sha: str
    track_id: int
    start_frame: int
    end_frame: int
    frames: list[int] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    end_reason: str = ""  # "length" | "fb_error" | "left_frame" | "lost_points" | "scale" | "video_end"
    # Ids of this video's tracks that co-occur with this one while staying apart (valid
    # in-video negatives, tracking/cooccur.py). None: not recorded (a schema-1 store);
    # readers then derive it from frames and boxes with the same rule.
    apart: list[int] | None = None


@dataclass
class PatchRecord:
    """Index record of one patch; the JPEG bytes are stored under the same key elsewhere."""

    key: str
    video_sha: str
    track_id: int
    frame: int
    box: Box
    role: str  # "first" | "last" | "inner"


@dataclass
class PairRecord:
    """Positive pair: two patches of the same track (first and last by default)."""

    anchor: str
    positive: str
    video_sha: str
    track_id: int


def patch_key(video_sha: str, track_id: int, frame: int) -> str:
    """Deterministic patch key: the same video, config and track give the same key on every run."""
    return f"{video_sha[:SHA16]}/{track_id:06d}/{frame:06d}"


@dataclass
class VideoHarvest:
    """Everything harvested from one video, written to the store in one transaction."""

    video: VideoRecord
    tracks: list[TrackRecord] = field(default_factory=list)
    patches: list[PatchRecord] = field(default_factory=list)
    jpegs: dict[str, bytes] = field(default_factory=dict)  # patch key -> JPEG bytes
    pairs: list[PairRecord] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Inconsistencies that would corrupt the store (empty when the harvest is sound)."""
        sha = self.video.sha
        keys = {p.key for p in self.patches}
        found = []
        if len(sha) < SHA16:
            found.append(f"video sha {sha!r} is shorter than {SHA16} characters")
        if len(keys) != len(self.patches):
            found.append("duplicate patch keys")
        for p in self.patches:
            if p.video_sha != sha or p.key != patch_key(sha, p.track_id, p.frame):
                found.append(f"patch {p.key!r} is not from this video or its key is not patch_key(...)")
            elif not self.jpegs.get(p.key):
                found.append(f"patch {p.key!r} has no JPEG bytes")
        found += [
            f"track {t.track_id} has video_sha {t.video_sha!r}" for t in self.tracks if t.video_sha != sha
        ]
        for pair in self.pairs:
            if pair.anchor not in keys or pair.positive not in keys or pair.video_sha != sha:
                found.append(f"pair {pair.anchor!r} -> {pair.positive!r} refers to patches not in this video")
        return found

"""Synthetic videos with known ground truth, written with cv2.VideoWriter.

Textured objects (blurred noise under a checker pattern, distinct per object and per seed)
move over a textured background that may pan. Ground truth is the box of every object in
every frame, in frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

GtBox = tuple[float, float, float, float]  # (x, y, w, h)

_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


@dataclass
class GroundTruth:
    """Per-frame boxes per object id; ``boxes[obj][t]`` is None when the object is off-screen."""

    path: Path
    n_frames: int
    size: tuple[int, int]  # (width, height)
    fps: float
    boxes: dict[int, list[GtBox | None]] = field(default_factory=dict)


def _texture(rng: np.random.Generator, h: int, w: int, cell: int, sigma: float) -> np.ndarray:
    """(h, w, 3) uint8: smooth colour noise plus a checker, so LK finds corners everywhere."""
    noise = rng.random((h, w, 3)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    noise = (noise - noise.min()) / max(float(np.ptp(noise)), 1e-6)
    yy, xx = np.mgrid[0:h, 0:w]
    checker = (((yy // cell) + (xx // cell)) % 2).astype(np.float32)[..., None]
    tint = rng.uniform(0.2, 1.0, size=3).astype(np.float32)
    img = 0.6 * noise * tint + 0.4 * checker * tint[::-1]
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    fourcc = _FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"{path}: use .mp4 (mp4v) or .avi (MJPG)")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: cv2.VideoWriter cannot write {fourcc}")
    return writer


def write_synthetic_video(
    path: str | Path,
    *,
    n_frames: int = 60,
    size: tuple[int, int] = (320, 240),
    n_objects: int = 1,
    camera_pan: tuple[float, float] = (0.0, 0.0),
    static: bool = False,
    seed: int = 0,
    fps: float = 15.0,
    object_px: tuple[int, int] = (40, 64),
    speed_px: tuple[float, float] = (1.5, 3.0),
) -> GroundTruth:
    """Write a video of textured rectangles moving over a (possibly panning) textured background.

    Args:
        path: output file, ``.mp4`` (mp4v) or ``.avi`` (MJPG).
        n_frames: frames to write.
        size: (width, height).
        n_objects: independently moving objects; they start in separate horizontal bands.
        camera_pan: background (and object) translation per frame in px, i.e. camera motion.
        static: objects do not move (with ``camera_pan=(0, 0)`` the whole video is still).
        seed: selects textures, start positions and velocities.
        fps: frame rate written in the container.
        object_px: range of object side lengths.
        speed_px: range of object speeds (px per frame) relative to the background.

    Returns:
        GroundTruth with one box list per object id (0..n_objects-1).
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    w, h = size
    pan = np.asarray(camera_pan, np.float64)
    span = np.abs(pan) * n_frames
    bg_w, bg_h = int(w + span[0] + 8), int(h + span[1] + 8)
    background = _texture(rng, bg_h, bg_w, cell=int(rng.integers(12, 20)), sigma=1.2)
    objects = []
    band = h / max(n_objects, 1)
    for k in range(n_objects):
        ow, oh = (int(v) for v in rng.integers(object_px[0], object_px[1] + 1, size=2))
        tex = _texture(rng, oh, ow, cell=int(rng.integers(5, 10)), sigma=0.8)
        cv2.rectangle(tex, (0, 0), (ow - 1, oh - 1), (255, 255, 255), 2)
        angle = rng.uniform(-0.25, 0.25) + (np.pi if rng.random() < 0.5 else 0.0)
        speed = 0.0 if static else rng.uniform(*speed_px)
        vel = speed * np.array([np.cos(angle), np.sin(angle)])
        x0 = rng.uniform(0.25 * w, 0.75 * w - ow)
        y0 = np.clip(band * k + (band - oh) / 2, 0, h - oh)
        objects.append((tex, np.array([x0, y0]), vel))
    gt = GroundTruth(path, n_frames, size, fps, {k: [] for k in range(n_objects)})
    writer = _writer(path, fps, size)
    try:
        for t in range(n_frames):
            # The camera moves by `pan`: the visible window slides over the background by +pan.
            ox = 4 + (t * pan[0] if pan[0] >= 0 else span[0] + t * pan[0])
            oy = 4 + (t * pan[1] if pan[1] >= 0 else span[1] + t * pan[1])
            shift = np.float32([[1, 0, -ox], [0, 1, -oy]])
            frame = cv2.warpAffine(background, shift, (w, h), flags=cv2.INTER_LINEAR)
            for k, (tex, start, vel) in enumerate(objects):
                oh, ow = tex.shape[:2]
                x, y = start + vel * t
                x, y = _bounce(x, w - ow), _bounce(y, h - oh)
                ix, iy = int(round(x)), int(round(y))
                frame[iy : iy + oh, ix : ix + ow] = tex
                gt.boxes[k].append((float(ix), float(iy), float(ow), float(oh)))
            writer.write(frame)
    finally:
        writer.release()
    return gt


def _bounce(v: float, hi: float) -> float:
    """Reflect a coordinate into [0, hi] so objects bounce off the frame edges."""
    period = 2 * hi
    v = v % period
    return v if v <= hi else period - v


def write_pan_video(
    path: str | Path, *, pan: tuple[float, float] = (2.0, 1.0), **kwargs: object
) -> GroundTruth:
    """A pure camera pan: the textured scene translates, nothing moves on its own."""
    return write_synthetic_video(path, n_objects=0, camera_pan=pan, **kwargs)  # type: ignore[arg-type]


def write_static_video(path: str | Path, **kwargs: object) -> GroundTruth:
    """A still scene with textured (but motionless) objects and no camera motion."""
    kwargs.setdefault("n_objects", 2)
    return write_synthetic_video(path, static=True, camera_pan=(0.0, 0.0), **kwargs)  # type: ignore[arg-type]


def iou(a: GtBox, b: GtBox) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def write_thin_objects_video(
    path: str | Path,
    *,
    size: tuple[int, int] = (1920, 1080),
    n_frames: int = 60,
    n_objects: int = 6,
    seed: int = 0,
    fps: float = 25.0,
) -> GroundTruth:
    """Small thin dark objects swimming over a plain bright background, fixed camera.

    The scene is defined at 1920x1080 and drawn at ``size``, so 1080p and 4K give the same
    video at two resolutions: objects about 36x10 px at 1080p moving 2-4 px per frame, plus
    sensor noise (sigma 3 grey levels). Corners are few and all on the objects, the hard
    case for sparse-flow motion discovery. Boxes are the drawn ellipses' bounding boxes.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    w, h = size
    s = w / 1920.0
    cols = int(np.ceil(np.sqrt(n_objects * 16 / 9)))
    objects = []
    for k in range(n_objects):
        cx = (k % cols + 0.5) * 1920 / cols + rng.uniform(-40, 40)
        cy = (k // cols + 0.5) * 1080 / int(np.ceil(n_objects / cols)) + rng.uniform(-40, 40)
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(2.0, 4.0)
        axes = (rng.uniform(15, 21), rng.uniform(4, 6))  # half length, half width at 1080p
        objects.append((np.array([cx, cy]), speed * np.array([np.cos(angle), np.sin(angle)]), axes))
    gt = GroundTruth(path, n_frames, size, fps, {k: [] for k in range(n_objects)})
    writer = _writer(path, fps, size)
    try:
        for t in range(n_frames):
            frame = np.full((h, w), 205, np.float32)
            frame += rng.normal(0, 3, (h, w)).astype(np.float32)
            img = np.clip(frame, 0, 255).astype(np.uint8)
            for k, (start, vel, axes) in enumerate(objects):
                x = _bounce(start[0] + vel[0] * t - 40, 1920 - 80) + 40
                y = _bounce(start[1] + vel[1] * t - 40, 1080 - 80) + 40
                heading = float(np.degrees(np.arctan2(vel[1], vel[0])))
                centre = (round(x * s * 16), round(y * s * 16))
                ax = (round(axes[0] * s * 16), round(axes[1] * s * 16))
                cv2.ellipse(img, centre, ax, heading, 0, 360, 45, -1, cv2.LINE_AA, shift=4)
                poly = cv2.ellipse2Poly(
                    (round(x * s), round(y * s)),
                    (round(axes[0] * s), round(axes[1] * s)),
                    round(heading),
                    0,
                    360,
                    5,
                )
                bx, by, bw, bh = cv2.boundingRect(poly)
                gt.boxes[k].append((float(bx), float(by), float(bw), float(bh)))
            writer.write(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()
    return gt


def run_ffmpeg(*args: str) -> None:
    """Run the ffmpeg binary that imageio-ffmpeg ships (pinned in requirements-dev.txt)."""
    import subprocess

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)


def write_mpeg1_ps(src: str | Path, dst: str | Path, *, split_frame: int) -> Path:
    """Re-encode ``src`` as an MPEG-1 program stream spliced at ``split_frame``, as ``cat a.mpg b.mpg`` makes.

    The second part's timestamps restart at zero, so the container's duration, and OpenCV's
    CAP_PROP_FRAME_COUNT with it, covers only the second part: the file declares far fewer
    frames than it holds (every frame of ``src`` is there, in order). ``src`` must have an
    MPEG-1 frame rate (e.g. 25 fps).
    """
    dst = Path(dst)
    parts = [dst.with_suffix(".part1.mpg"), dst.with_suffix(".part2.mpg")]
    enc = ["-an", "-c:v", "mpeg1video", "-q:v", "2", "-f", "mpeg"]
    run_ffmpeg("-i", str(src), "-frames:v", str(split_frame), *enc, str(parts[0]))
    trim = f"trim=start_frame={split_frame},setpts=PTS-STARTPTS"
    run_ffmpeg("-i", str(src), "-vf", trim, *enc, str(parts[1]))
    dst.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    for part in parts:
        part.unlink()
    return dst


@dataclass
class TrackScore:
    """How harvested tracks match ground truth.

    Attributes:
        tracks: tracks scored.
        precise_tracks: tracks whose boxes have IoU >= 0.5 with their object on >= 80 % of their frames.
        box_precision: over all track frames, the fraction with IoU >= 0.5 against the track's object.
        objects_found: fraction of the objects that move in the clip with at least one precise track.
    """

    tracks: int
    precise_tracks: int
    box_precision: float
    objects_found: float


def score_tracks(gt: GroundTruth, tracks: list) -> TrackScore:  # list[TrackRecord]
    """Match each track to the object it overlaps most over its frames, and score it."""
    hits = total = precise = 0
    found: set[int] = set()
    for t in tracks:
        per_obj = {
            obj: [
                iou(b, gt.boxes[obj][f]) if gt.boxes[obj][f] else 0.0
                for f, b in zip(t.frames, t.boxes, strict=True)
            ]
            for obj in gt.boxes
        }
        obj = max(per_obj, key=lambda o: sum(per_obj[o]))
        good = sum(v >= 0.5 for v in per_obj[obj])
        hits, total = hits + good, total + len(t.frames)
        if good >= 0.8 * len(t.frames):
            precise += 1
            found.add(obj)
    moving = [o for o, bs in gt.boxes.items() if len({b for b in bs if b}) > 1]
    return TrackScore(
        len(tracks), precise, hits / total if total else 0.0, len(found & set(moving)) / max(len(moving), 1)
    )


# Generated kinds with ground truth for the coverage tests and bench/bench_coverage.py (issue 13).
KINDS = ("thin_1080p", "thin_4k", "thin_20_frames", "mpeg1_ps")


def make_kind(kind: str, root: str | Path) -> GroundTruth:
    """Write one generated kind into ``root``: thin objects on a plain background at 1080p, the
    same scene at 4K, a 20-frame clip, or textured objects in a spliced MPEG-1 program stream."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if kind == "thin_1080p":
        return write_thin_objects_video(root / "thin_1080p.mp4", size=(1920, 1080), n_frames=60, seed=1)
    if kind == "thin_4k":
        return write_thin_objects_video(root / "thin_4k.mp4", size=(3840, 2160), n_frames=40, seed=1)
    if kind == "thin_20_frames":
        return write_thin_objects_video(root / "thin_20.mp4", size=(1920, 1080), n_frames=20, seed=2)
    if kind == "mpeg1_ps":
        gt = write_synthetic_video(root / "src.avi", n_frames=60, n_objects=3, seed=11, fps=25.0)
        gt.path = write_mpeg1_ps(gt.path, root / "spliced.mpeg", split_frame=36)
        return gt
    raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")

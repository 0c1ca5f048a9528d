"""Labelled videos with known boxes and identities that re-appear across videos.

Objects are regions cut from frames of the corpus's *held-out* clips (never training scenes,
never scikit-image's sample photos), with a soft elliptical mask. Each video pans across a
background frame of another held-out clip while its objects move with changing scale,
rotation, lighting and blur, pass behind a moving occluder and over each other. Every
identity appears in several videos, so "the same object in another video" can be scored.

The videos are written as H.264 and crops are cut from the *decoded* frames at the
ground-truth boxes, the same way the harvest cuts patches (square, with context, JPEG).
Everything is deterministic given the seed and the source frames.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bench.corpus_io import write_video
from trackemb.config import HarvestConfig
from trackemb.tracking.crops import crop_patch, encode_jpeg

GENERATOR_VERSION = 3
REPEATS, PER_VIDEO = 4, 4  # each identity appears in 4 videos, 4 identities per video
# Identities (16): one frame of each held-out clip, then every held-out still but the two
# backgrounds and face03 (a third photo of the man in face01/02 and in both psychopy clips).
BACKGROUND_STILLS = ("psychopy_panorama", "psychopy_bart_background")
UNUSED_STILLS = ("psychopy_face03",)
SIZE = (320, 240)  # w, h of the generated videos


@dataclass
class Obj:
    identity: int
    bgr: np.ndarray  # (s, s, 3) uint8
    alpha: np.ndarray  # (s, s) float32 in [0, 1]
    source: int  # index of the source the object was cut from


@dataclass
class Video:
    name: str
    identities: list[int]
    frames: list[np.ndarray] = field(default_factory=list)
    boxes: dict[int, list[tuple[int, int, int, int]]] = field(default_factory=dict)  # identity -> per frame


def cut_objects(sources: list[np.ndarray], rng: np.random.Generator, side_px: int = 72) -> list[Obj]:
    """One textured, elliptically masked object per source image (identity = source index)."""
    objs = []
    for i, img in enumerate(sources):
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.45, 0.65))
        grad = cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_32F)
        best, best_e = (0, 0), -1.0
        for _ in range(12):  # the most textured of a few random windows: an object, not a blank wall
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            e = float(np.abs(grad[y : y + side, x : x + side]).mean())
            if e > best_e:
                best, best_e = (x, y), e
        x, y = best
        patch = cv2.resize(img[y : y + side, x : x + side], (side_px, side_px), interpolation=cv2.INTER_AREA)
        yy, xx = np.mgrid[0:side_px, 0:side_px].astype(np.float32)
        c, r = (side_px - 1) / 2, side_px / 2
        ry = r * rng.uniform(0.6, 1.0)
        inside = ((xx - c) / r) ** 2 + ((yy - c) / ry) ** 2
        alpha = np.clip((1.0 - inside) * 6.0, 0.0, 1.0).astype(np.float32)  # feathered ellipse
        objs.append(Obj(i, patch, alpha, i))
    return objs


def plan_videos(n_ids: int, n_videos: int, per_video: int, rng: np.random.Generator) -> list[list[int]]:
    """Identities of each video: every identity appears ``n_videos * per_video // n_ids`` (>= 2) times,
    never twice in one video."""
    reps = n_videos * per_video // n_ids
    if reps < 2 or reps * n_ids != n_videos * per_video:
        raise ValueError(
            f"{n_videos} videos x {per_video} objects cannot show {n_ids} identities >= 2 times each"
        )
    for _ in range(1000):
        pool = list(rng.permutation(np.repeat(np.arange(n_ids), reps)))
        videos = [pool[i * per_video : (i + 1) * per_video] for i in range(n_videos)]
        if all(len(set(v)) == per_video for v in videos):
            return [[int(i) for i in v] for v in videos]
    raise RuntimeError("no valid assignment found")


def _warp(obj: Obj, cx: float, cy: float, scale: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    s = obj.bgr.shape[0]
    m = cv2.getRotationMatrix2D(((s - 1) / 2, (s - 1) / 2), angle, scale)
    m[:, 2] += (cx - (s - 1) / 2, cy - (s - 1) / 2)
    rgb = cv2.warpAffine(obj.bgr, m, SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(obj.alpha, m, SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return rgb.astype(np.float32), alpha


def render(
    name: str,
    objs: list[Obj],
    background: np.ndarray,
    occluder: np.ndarray,
    rng: np.random.Generator,
    n_frames: int = 40,
    with_objects: bool = True,
) -> Video:
    """Render one video: a panning background, moving/transforming objects, a moving occluder.

    Boxes are the axis-aligned extent (alpha > 0.5) of each object's full, unoccluded shape.
    ``with_objects=False`` draws the same video without the objects (tests compare the two).
    """
    w, h = SIZE
    bh, bw = background.shape[:2]  # a random 4:3 window of the background, then panned across
    cw = min(bw, int(bh * rng.uniform(0.6, 1.0) * 4 / 3))
    ch = cw * 3 // 4
    y, x = int(rng.integers(0, bh - ch + 1)), int(rng.integers(0, bw - cw + 1))
    bg = cv2.resize(
        background[y : y + ch, x : x + cw], (int(w * 1.6), int(h * 1.6)), interpolation=cv2.INTER_AREA
    )
    pan0 = rng.uniform(0, 1, 2) * (bg.shape[1] - w, bg.shape[0] - h)
    pan1 = rng.uniform(0, 1, 2) * (bg.shape[1] - w, bg.shape[0] - h)
    motions = []
    for _ in objs:
        p0 = rng.uniform((60, 60), (w - 60, h - 60))
        p1 = rng.uniform((60, 60), (w - 60, h - 60))
        motions.append(
            dict(p0=p0, p1=p1, s=rng.uniform(0.8, 1.1), ds=rng.uniform(0.1, 0.3), a0=rng.uniform(-30, 30),
                 da=rng.uniform(-45, 45), g0=rng.uniform(0.6, 1.0), g1=rng.uniform(1.0, 1.4),
                 blur=rng.uniform(0.5, 1.8), phase=rng.uniform(0, 2 * np.pi))
        )  # fmt: skip
    occ = cv2.resize(occluder, (int(w * 0.1), h))
    occ_x0, occ_x1 = (-occ.shape[1], w) if rng.random() < 0.5 else (w, -occ.shape[1])
    video = Video(name, [o.identity for o in objs], boxes={o.identity: [] for o in objs})
    for t in range(n_frames):
        u = t / max(1, n_frames - 1)
        px, py = (pan0 + (pan1 - pan0) * u).astype(int)
        frame = bg[py : py + h, px : px + w].astype(np.float32)
        for obj, m in zip(objs, motions, strict=True):
            c = m["p0"] + (m["p1"] - m["p0"]) * u
            scale = m["s"] * (1 + m["ds"] * np.sin(2 * np.pi * u + m["phase"]))
            rgb, alpha = _warp(obj, c[0], c[1], scale, m["a0"] + m["da"] * u)
            ys, xs = np.nonzero(alpha > 0.5)
            x0, y0 = int(xs.min()), int(ys.min())
            video.boxes[obj.identity].append((x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1))
            if not with_objects:
                continue
            sigma = m["blur"] * max(0.0, np.sin(3 * np.pi * u + m["phase"]))  # blur comes and goes
            if sigma > 0.3:
                rgb, alpha = cv2.GaussianBlur(rgb, (0, 0), sigma), cv2.GaussianBlur(alpha, (0, 0), sigma)
            gain = m["g0"] + (m["g1"] - m["g0"]) * u  # lighting change over the clip
            frame = frame * (1 - alpha[..., None]) + np.clip(rgb * gain, 0, 255) * alpha[..., None]
        ox = int(occ_x0 + (occ_x1 - occ_x0) * u)
        lo, hi = max(0, ox), min(w, ox + occ.shape[1])
        if hi > lo:  # the occluder passes in front of everything
            frame[:, lo:hi] = occ[:, lo - ox : hi - ox]
        video.frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return video


def generate(
    objects: list[tuple[np.ndarray, str]],
    backgrounds: list[tuple[np.ndarray, str]],
    out_dir: Path,
    *,
    seed: int = 0,
    n_videos: int = 12,
    per_video: int = 4,
    n_frames: int = 40,
    crop_every: int = 11,
) -> dict[str, np.ndarray]:
    """Write the videos to ``out_dir`` and return crops at the ground-truth boxes.

    Args:
        objects: (BGR image, source name): one identity is cut from each.
        backgrounds: (BGR image, source name): panned behind the objects, and cut into occluders;
            a video's background never comes from the source of one of its objects.
        crop_every: frames between crops of one object in one video (>= 10: not near-duplicates).

    Returns:
        ``{"jpegs": (N,) object array of bytes, "identity", "video", "frame": (N,) int64,
        "box": (N, 4) int64}``; crops follow the harvest's square-with-context JPEG patches.
    """
    rng = np.random.default_rng(seed)
    cfg = HarvestConfig()
    objs = cut_objects([img for img, _ in objects], rng)
    out: dict[str, list] = {"jpegs": [], "identity": [], "video": [], "frame": [], "box": []}
    out_dir.mkdir(parents=True, exist_ok=True)
    for v, ids in enumerate(plan_videos(len(objs), n_videos, per_video, rng)):
        used = {objects[i][1] for i in ids}
        free = [k for k, (_, src) in enumerate(backgrounds) if src not in used]
        if not free:
            raise ValueError(f"video {v}: every background shares a source with one of its objects")
        bg, occ = (backgrounds[int(k)][0] for k in rng.choice(free, 2, replace=len(free) < 2))
        video = render(f"labelled_{v:02d}", [objs[i] for i in ids], bg, occ, rng, n_frames)
        path = out_dir / f"{video.name}.mp4"
        write_video(video.frames, path, fps=10, size=SIZE)
        decoded = _decode(path)
        for t in range(crop_every // 2, n_frames, crop_every):
            for ident in ids:
                box = video.boxes[ident][t]
                patch = crop_patch(decoded[t], box, cfg.context_frac, cfg.patch_px)
                out["jpegs"].append(encode_jpeg(patch, cfg.jpeg_quality))
                for key, val in (("identity", ident), ("video", v), ("frame", t), ("box", box)):
                    out[key].append(val)
    arrays = {k: np.array(v, dtype=np.int64) for k, v in out.items() if k != "jpegs"}
    return {"jpegs": np.array(out["jpegs"], dtype=object), **arrays}


def _decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


def read_frames(clip: Path, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` frames spread over the clip (seeded jitter), read by seeking."""
    cap = cv2.VideoCapture(str(clip))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for j in range(n):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int((j + rng.uniform(0.1, 0.9)) * total / n))
        ok, frame = cap.read()
        if ok:
            frames.append(frame)
    cap.release()
    if not frames:
        raise ValueError(f"{clip}: no decodable frames")
    return frames


def fit(img: np.ndarray, long_side: int) -> np.ndarray:
    s = long_side / max(img.shape[:2])
    return cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)


def build(root: Path, clips: list, seed: int = 0, log=print) -> dict[str, np.ndarray]:  # noqa: ANN001
    """The labelled set from the cached held-out corpus (``bench.corpus`` clips), generated once per
    (generator version, seed, source hashes) and cached under ``root/labelled/``."""
    held = [c for c in clips if c.split == "heldout"]
    stills = [c for c in held if c.kind == "image"]
    videos = [c for c in held if c.kind == "video"]
    key = hashlib.sha256(json.dumps(sorted((c.name, c.sha256) for c in held)).encode()).hexdigest()[:12]
    cache = root / "labelled" / f"v{GENERATOR_VERSION}-seed{seed}-{key}"
    if (cache / "patches.npz").is_file():
        with np.load(cache / "patches.npz") as z:
            data = {k: z[k] for k in z.files}
        ends = np.cumsum(data.pop("jpeg_len"))
        blob = data.pop("jpeg_blob").tobytes()
        data["jpegs"] = np.array(
            [blob[e - n : e] for e, n in zip(ends, np.diff(ends, prepend=0), strict=True)], dtype=object
        )
        return data
    rng = np.random.default_rng(seed)
    log(f"[labelled] generating into {cache} ...")
    objects: list[tuple[np.ndarray, str]] = []
    backgrounds: list[tuple[np.ndarray, str]] = []
    for c in videos:
        frames = [fit(f, 480) for f in read_frames(root / "clips" / c.filename, 3, rng)]
        objects.append((frames[0], c.name))
        backgrounds += [(f, c.name) for f in frames[1:]]
    for c in stills:
        img = cv2.imread(str(root / "clips" / c.filename))
        if c.name in BACKGROUND_STILLS:
            backgrounds.append((fit(img, 2048), c.name))
        elif c.name not in UNUSED_STILLS:
            objects.append((fit(img, 480), c.name))
    n_videos = len(objects) * REPEATS // PER_VIDEO
    data = generate(objects, backgrounds, cache / "videos", seed=seed, n_videos=n_videos, per_video=PER_VIDEO)
    lens = np.array([len(j) for j in data["jpegs"]], dtype=np.int64)
    blob = np.frombuffer(b"".join(data["jpegs"]), dtype=np.uint8)
    arrays = {k: v for k, v in data.items() if k != "jpegs"}
    np.savez(cache / "patches.tmp.npz", jpeg_blob=blob, jpeg_len=lens, **arrays)
    (cache / "patches.tmp.npz").replace(cache / "patches.npz")
    (cache / "sources.json").write_text(json.dumps({"objects": [n for _, n in objects]}, indent=1))
    return data

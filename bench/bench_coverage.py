"""Harvest yield and box precision on every generated kind, side by side with the bundled clips.

Yield is tracks per 100 decoded frames; box precision is the fraction of track frames whose
box has IoU >= 0.5 with the tracked object (generated kinds only: the bundled clips have no
ground truth), and "objects found" the fraction of moving objects with a precise track. The
kinds come from the tests' generator (tests/synthetic.py): thin dark objects on a plain
background at 1080p and 4K, a 20-frame clip, and a spliced MPEG-1 program stream.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import REPO, BenchResult
from bench.inputs import cut_clip, sample_clips
from trackemb.config import DecodeConfig, HarvestConfig
from trackemb.tracking.harvest import harvest_video

sys.path.insert(0, str(REPO / "tests"))  # the ground-truth generator lives with the tests
from synthetic import KINDS, make_kind, score_tracks  # noqa: E402


def _yield(n_tracks: int, frames: int) -> float:
    return round(100.0 * n_tracks / max(frames, 1), 2)


def run(quick: bool, work: Path) -> BenchResult:
    res = BenchResult("coverage")
    cfg = HarvestConfig()
    kinds = ("thin_20_frames",) if quick else KINDS
    for kind in kinds:
        gt = make_kind(kind, work / kind)
        h = harvest_video(gt.path, cfg)
        score = score_tracks(gt, h.tracks)
        v = h.video
        res.data[kind] = {"tracks": v.n_tracks, "pairs": v.n_pairs, "frames": v.frames,
                          "declared_frames": v.declared_frames, "motion": v.motion_path, **vars(score)}  # fmt: skip
        note = f"{v.motion_path}, {v.n_tracks} tracks, {v.frames}/{v.declared_frames} frames"
        res.add(f"{kind}: tracks per 100 frames", _yield(v.n_tracks, v.frames), "", note=note)
        res.add(f"{kind}: box precision", round(score.box_precision, 3), "", target=0.8)
        res.add(f"{kind}: objects found", round(score.objects_found, 3), "", target=0.8)
    for clip in sample_clips()[:1] if quick else sample_clips():
        path = cut_clip(clip, work / "clips" / clip.name, 40) if quick else clip
        h = harvest_video(path, cfg.model_copy(update={"decode": DecodeConfig()}))
        v = h.video
        res.data[clip.name] = {
            "tracks": v.n_tracks,
            "pairs": v.n_pairs,
            "frames": v.frames,
            "motion": v.motion_path,
        }
        note = f"{v.motion_path}, {v.n_tracks} tracks, {v.n_pairs} pairs; no ground truth"
        res.add(f"{clip.name}: tracks per 100 frames", _yield(v.n_tracks, v.frames), "", note=note)
    return res

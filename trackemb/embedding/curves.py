"""Training curves as one PNG (cv2 only): read TensorBoard scalars back and draw them in panels."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from trackemb.pictures import BACKGROUND, TEXT, save_png, text_band

# (tag, panel title): what a reader of the report needs to judge a run.
PANELS = (
    ("train/loss", "training loss (triplet)"),
    ("val/R@1", "held-out R@1 (higher is better)"),
    ("train/pos_dist", "d(anchor, positive)"),
    ("train/neg_dist", "d(anchor, negative)"),
)
_W, _H, _M = 360, 200, 36  # panel size and margin for the axes' labels
_LINE = (90, 180, 255)


def read_scalars(tb_dir: str | Path, tags: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from the TensorBoard event files under ``tb_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0}).Reload()
    have = set(events.Tags().get("scalars", []))
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in tags if t in have}


def _panel(title: str, points: list[tuple[int, float]]) -> np.ndarray:
    img = np.full((_H, _W, 3), BACKGROUND, np.uint8)
    steps = np.array([s for s, v in points if math.isfinite(v)], float)
    values = np.array([v for _, v in points if math.isfinite(v)], float)
    x0, y0, x1, y1 = _M, 8, _W - 10, _H - 22
    cv2.rectangle(img, (x0, y0), (x1, y1), (90, 90, 90), 1)
    if len(values):
        lo, hi = float(values.min()), float(values.max())
        lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)
        s_lo, s_hi = float(steps.min()), max(float(steps.max()), float(steps.min()) + 1)
        xs = x0 + (steps - s_lo) / (s_hi - s_lo) * (x1 - x0)
        ys = y1 - (values - lo) / (hi - lo) * (y1 - y0)
        pts = np.stack([xs, ys], 1).round().astype(np.int32)
        cv2.polylines(img, [pts], False, _LINE, 2, cv2.LINE_AA)
        for pt in pts if len(pts) <= 40 else pts[[0, -1]]:
            cv2.circle(img, tuple(int(c) for c in pt), 2, _LINE, -1, cv2.LINE_AA)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(img, f"{hi:.3g}", (2, y0 + 10), font, 0.33, TEXT, 1, cv2.LINE_AA)
        cv2.putText(img, f"{lo:.3g}", (2, y1), font, 0.33, TEXT, 1, cv2.LINE_AA)
        cv2.putText(img, f"step {s_lo:.0f}", (x0, _H - 6), font, 0.33, TEXT, 1, cv2.LINE_AA)
        label = f"{s_hi:.0f}"
        cv2.putText(img, label, (x1 - 8 * len(label), _H - 6), font, 0.33, TEXT, 1, cv2.LINE_AA)
    return np.vstack([text_band(_W, [title]), img])


def write_curves(tb_dir: str | Path, out_png: str | Path) -> Path | None:
    """Draw the report's panels from a run's TensorBoard logs; None when the run logged nothing."""
    series = read_scalars(tb_dir, tuple(tag for tag, _ in PANELS)) if Path(tb_dir).is_dir() else {}
    panels = [_panel(title, series[tag]) for tag, title in PANELS if series.get(tag)]
    if not panels:
        return None
    while len(panels) % 2:
        panels.append(np.full_like(panels[0], BACKGROUND))
    rows = [np.hstack(panels[i : i + 2]) for i in range(0, len(panels), 2)]
    captions = {title: f"{len(series[tag])} points" for tag, title in PANELS if series.get(tag)}
    return save_png(out_png, np.vstack(rows), {"Title": "training curves", **captions})

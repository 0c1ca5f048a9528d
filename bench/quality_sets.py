"""The two evaluation sets of the quality benchmark and the encoders compared on them.

(a) held-out real scenes: the corpus's held-out folder harvested with default settings
    (cached store), labels = tracks, positives >= ``MIN_GAP`` frames apart;
(b) the labelled generated set (:mod:`bench.labelled`), labels = identities.

Encoders: the exported one, the same architecture untrained (seeded like training, same
embedding layer), raw 16x16 pixels, and PCA-128 of those pixels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.corpus import Clip
from trackemb.embedding.evaluate import RAW_PIXELS_PX

MIN_GAP = 10  # frames: same-track patches closer than this are near-duplicates, left out of the ranking
PCA_DIM = 128
# The input size every untrained floor of the issue and of ablation rounds 1-3 was measured at.
FLOOR_PX = 64
Encode = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalSet:
    name: str
    jpegs: list[bytes]
    labels: np.ndarray  # track or identity
    videos: np.ndarray
    frames: np.ndarray
    info: dict[str, Any]


def harvest_env() -> dict[str, str]:
    """Environment for a `trackemb` subprocess: offline Prefect, patient with a busy machine."""
    env = dict(os.environ)
    env.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="trackemb-quality-prefect-"))
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    env.setdefault("COLUMNS", "120")  # rich tables in a captured log: wide enough to stay readable
    return env


def harvest_folder(
    video_dir: Path, store: Path, log: Callable[[str], None] = print, extra: list[str] | None = None
) -> dict[str, Any]:
    """``trackemb harvest VIDEO_DIR --store STORE [EXTRA]`` (default settings), unless already complete.

    The summary JSON next to the store marks a finished harvest; a partial store is resumed.
    """
    summary = store.with_name(store.name + ".harvest.json")
    if summary.is_file() and _readable(store):
        return json.loads(summary.read_text())
    log(f"[quality] harvesting {video_dir} -> {store} (default settings) ...")
    store.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "trackemb.cli", "harvest", str(video_dir), "--store", str(store)]
    subprocess.run([*cmd, *(extra or []), "--json", str(summary)], check=True, env=harvest_env())
    return json.loads(summary.read_text())


def _readable(store: Path) -> bool:
    """The store exists and this trackemb reads it (an older schema goes back through the harvest,
    which migrates it or says what to do)."""
    from trackemb.storage.store import open_reader

    try:
        with open_reader(str(store)) as reader:
            reader.videos()
        return True
    except Exception:  # noqa: BLE001 - any failure to read means "harvest again"
        return False


def real_set(root: Path) -> EvalSet:
    """Every patch of the harvested held-out scenes (store cached per harvest-config fingerprint)."""
    from trackemb.config import HarvestConfig
    from trackemb.embedding.embed import patch_rows
    from trackemb.storage.store import open_reader

    store = root / "stores" / f"heldout-{HarvestConfig().fingerprint()}.lmdb"
    summary = harvest_folder(root / "heldout", store)
    with open_reader(str(store)) as reader:
        done = {v.sha for v in reader.videos() if v.status == "done"}
        rows = [r for r in patch_rows(reader) if r["video"] in done]
        jpegs = reader.get_jpegs([r["patch_id"] for r in rows])
    track_of: dict[tuple[str, int], int] = {}
    labels = np.array([track_of.setdefault((r["video"], r["track"]), len(track_of)) for r in rows])
    videos = np.unique([r["video"] for r in rows], return_inverse=True)[1]
    per_video = {Path(v["path"]).name: v["tracks"] for v in summary.get("videos", [])}
    info = {"store": str(store), "tracks_per_video": per_video, "min_gap_frames": MIN_GAP}
    frames = np.array([r["frame"] for r in rows], dtype=np.int64)
    return EvalSet("held-out real scenes", list(jpegs), labels, videos, frames, info)


def labelled_set(root: Path, clips: list[Clip], seed: int) -> EvalSet:
    from bench.labelled import build

    d = build(root, clips, seed)
    info = {"videos": int(len(np.unique(d["video"]))), "seed": seed}
    return EvalSet("labelled generated", list(d["jpegs"]), d["identity"], d["video"], d["frame"], info)


def read_card(export_dir: Path) -> dict[str, Any]:
    from trackemb.embedding.card import CARD_NAME

    path = export_dir / CARD_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{export_dir}: not a `trackemb export` directory (no {CARD_NAME})")
    return json.loads(path.read_text())


def embedding_layer(card: dict[str, Any]) -> str:
    """ "backbone" when the export embeds with the pooled backbone features, else "head"."""
    for where in (card, card.get("export_config") or {}, card.get("config") or {}):
        if isinstance(where, dict) and where.get("embedding_layer"):
            return str(where["embedding_layer"])
    return "head"


def encoders(export_dir: Path, card: dict[str, Any]) -> dict[str, tuple[Encode, int]]:
    """name -> (encode, input px) for the trained export, its untrained twin and raw pixels.

    An export trained at another input size than the default also gets the untrained twin at the
    default size (``random_init_<px>px``): a larger input can lower the untrained network's
    score, and beating a weakened floor would prove nothing.
    """
    import trackemb
    from trackemb.embedding.model import encoder_from_args, load_backbone_weights

    trained = trackemb.load_encoder(str(export_dir)).eval()
    config = card.get("config") or {}
    px = int(card["input_size"][0])
    args = {
        "arch": card["architecture"],
        "embed_dim": int(config.get("embed_dim", card["embedding_dim"])),
        "input_px": px,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.get("seed", 0)))  # training seeds, then builds its encoder
        untrained = encoder_from_args(args).eval()
    init = config.get("init_weights")
    if init and Path(init).is_file():  # the run started from these weights, so "untrained" does too
        load_backbone_weights(untrained, init)
    random_init: Encode = untrained.forward_features if embedding_layer(card) == "backbone" else untrained
    out: dict[str, tuple[Encode, int]] = {"trained": (trained, px), "random_init": (random_init, px)}
    if px != FLOOR_PX:  # same weights: the network is input-size agnostic
        out[default_random_init()] = (random_init, FLOOR_PX)
    out["raw_pixels"] = (lambda x: x.flatten(1), RAW_PIXELS_PX)
    return out


def default_random_init() -> str:
    """The method name of the untrained twin scored at :data:`FLOOR_PX`."""
    return f"random_init_{FLOOR_PX}px"


class _Jpegs:
    """The reader interface :func:`trackemb.embedding.embed.embed_keys` wants, over bytes in memory."""

    def __init__(self, jpegs: list[bytes]) -> None:
        self._jpegs = jpegs

    def get_jpegs(self, keys: list[str]) -> list[bytes]:
        return [self._jpegs[int(k)] for k in keys]


def embed_set(encode: Encode, jpegs: list[bytes], px: int, batch_size: int = 128) -> np.ndarray:
    from trackemb.embedding.embed import embed_keys

    keys = [str(i) for i in range(len(jpegs))]
    return embed_keys(
        encode, _Jpegs(jpegs), keys, input_px=px, batch_size=batch_size, device=torch.device("cpu")
    )


def pca_pixels(pixels: np.ndarray, dim: int = PCA_DIM) -> np.ndarray:
    """Raw pixels projected on their first ``dim`` principal components (fit on the set), L2-normalised."""
    from sklearn.decomposition import PCA

    k = min(dim, len(pixels) - 1, pixels.shape[1])
    z = PCA(n_components=k, random_state=0).fit_transform(pixels)
    return F.normalize(torch.from_numpy(z.astype(np.float32)), dim=1).numpy()

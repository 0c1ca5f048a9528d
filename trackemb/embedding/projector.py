"""TensorBoard projector files without an event file.

``SummaryWriter.add_embedding`` also writes an (empty) event file, so every export showed up
as an empty run in TensorBoard's run list. The projector only needs its config, tensors,
metadata and sprite: open it with ``tensorboard --logdir EXPORT_DIR/projector``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard._embedding import (
    get_embedding_info,
    make_mat,
    make_sprite,
    make_tsv,
    write_pbtxt,
)


def write_projector(
    out_dir: Path,
    emb: np.ndarray,
    metadata: list[list[str]],
    header: list[str],
    thumbnails: torch.Tensor | None,
    *,
    tag: str,
) -> Path:
    """Write one embedding (with metadata columns and thumbnails) as a projector under ``out_dir``.

    Args:
        emb: (N, D) float.
        metadata: N rows, one value per ``header`` column (columns to colour and search by).
        thumbnails: (N, 3, h, w) float in [0, 1], or None.
    """
    sub = out_dir / tag
    sub.mkdir(parents=True, exist_ok=True)
    make_tsv(metadata, str(sub), metadata_header=header)
    if thumbnails is not None:
        make_sprite(thumbnails, str(sub))
    make_mat(torch.as_tensor(emb).float(), str(sub))  # rows of tensors, as add_embedding passes them
    info = get_embedding_info(metadata, thumbnails, tag, 0, tag)
    write_pbtxt(str(out_dir), str(info))
    return out_dir

"""What a human watches while training: metric writers, retrieval accuracy, collapse alarm.

``train()`` takes a :class:`MetricsWriter`; production passes a :class:`TensorBoardWriter`,
tests pass a :class:`ListWriter` and read the values back.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from torchvision.utils import make_grid

log = logging.getLogger(__name__)


class MetricsWriter(Protocol):
    def scalar(self, tag: str, value: float, step: int) -> None: ...

    def histogram(self, tag: str, values: Tensor, step: int) -> None: ...

    def images(self, tag: str, images: Tensor, step: int, nrow: int = 8) -> None:
        """images: (N, 3, H, W) float in [0, 1], shown as one grid with ``nrow`` per row."""

    def embedding(
        self,
        emb: Tensor,
        metadata: list[list[str]],
        thumbnails: Tensor | None,
        step: int,
        tag: str,
        header: list[str] | None = None,
    ) -> None:
        """emb: (N, D); metadata: N rows of ``header`` columns; thumbnails: (N, 3, h, w) float in [0, 1] or None."""

    def text(self, tag: str, text: str, step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardWriter:
    """:class:`MetricsWriter` over ``torch.utils.tensorboard.SummaryWriter`` writing to ``log_dir``."""

    def __init__(self, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(log_dir=str(log_dir))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._tb.add_scalar(tag, value, step)

    def histogram(self, tag: str, values: Tensor, step: int) -> None:
        if len(values):
            self._tb.add_histogram(tag, values.detach().float().cpu(), step)

    def images(self, tag: str, images: Tensor, step: int, nrow: int = 8) -> None:
        if len(images):
            self._tb.add_image(tag, make_grid(images.detach().float().cpu(), nrow=nrow, padding=2), step)

    def embedding(
        self,
        emb: Tensor,
        metadata: list[list[str]],
        thumbnails: Tensor | None,
        step: int,
        tag: str,
        header: list[str] | None = None,
    ) -> None:
        self._tb.add_embedding(
            emb.detach().float().cpu(), metadata=metadata, label_img=thumbnails, global_step=step, tag=tag,
            metadata_header=header,
        )  # fmt: skip

    def text(self, tag: str, text: str, step: int) -> None:
        self._tb.add_text(tag, text, step)

    def close(self) -> None:
        self._tb.close()


class ListWriter:
    """In-memory :class:`MetricsWriter`: ``records`` holds ``(kind, tag, step, value)`` tuples."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, int, Any]] = []

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.records.append(("scalar", tag, step, float(value)))

    def histogram(self, tag: str, values: Tensor, step: int) -> None:
        self.records.append(("histogram", tag, step, values.detach().cpu()))

    def images(self, tag: str, images: Tensor, step: int, nrow: int = 8) -> None:
        self.records.append(("images", tag, step, images.detach().cpu()))

    def embedding(
        self,
        emb: Tensor,
        metadata: list[list[str]],
        thumbnails: Tensor | None,
        step: int,
        tag: str,
        header: list[str] | None = None,
    ) -> None:
        self.records.append(("embedding", tag, step, (emb.detach().cpu(), metadata)))

    def text(self, tag: str, text: str, step: int) -> None:
        self.records.append(("text", tag, step, text))

    def close(self) -> None:
        pass

    def scalars(self, tag: str) -> list[tuple[int, float]]:
        """All ``(step, value)`` written under ``tag``, in order."""
        return [(step, value) for kind, t, step, value in self.records if kind == "scalar" and t == tag]

    def tags(self, kind: str) -> set[str]:
        return {t for k, t, _, _ in self.records if k == kind}


class NullWriter:
    """Discards everything (DDP ranks other than 0)."""

    def scalar(self, tag: str, value: float, step: int) -> None:
        pass

    def histogram(self, tag: str, values: Tensor, step: int) -> None:
        pass

    def images(self, tag: str, images: Tensor, step: int, nrow: int = 8) -> None:
        pass

    def embedding(
        self,
        emb: Tensor,
        metadata: list[list[str]],
        thumbnails: Tensor | None,
        step: int,
        tag: str,
        header: list[str] | None = None,
    ) -> None:
        pass

    def text(self, tag: str, text: str, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def recall_at_1(emb: Tensor, labels: Tensor, chunk: int = 1024) -> float:
    """Share of queries whose nearest other item (by cosine) has the same label.

    Args:
        emb: (M, D) float, L2-normalised.
        labels: (M,) long, e.g. track ids; a query counts only if its label occurs twice or more.

    Returns:
        R@1 in [0, 1], or NaN when no label occurs twice.
    """
    emb = emb.float()
    counts = torch.bincount(labels - labels.min()) if len(labels) else torch.zeros(0, dtype=torch.long)
    has_pos = counts[labels - labels.min()] >= 2 if len(labels) else torch.zeros(0, dtype=torch.bool)
    queries = has_pos.nonzero(as_tuple=True)[0]
    if len(queries) == 0:
        return math.nan
    hits = 0
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        sim = emb[q] @ emb.T
        sim[torch.arange(len(q)), q] = -math.inf  # a patch is not its own neighbour
        hits += int((labels[sim.argmax(1)] == labels[q]).sum())
    return hits / len(queries)


class CollapseDetector:
    """Flags collapse: loss pinned at the margin while embeddings stop spreading.

    When every input maps to (nearly) one point, ``D(a,p) = D(a,n)`` and each triplet's
    loss is exactly the margin, so both signals together over a window are a reliable sign
    (either alone is not: early training also sits near the margin).

    Args:
        margin: the triplet margin.
        window: consecutive steps both conditions must hold.
        spread_min: ``emb_std`` (see ``losses.embedding_spread``) below which spread counts as gone.
        loss_tol: relative distance of the loss from the margin that counts as pinned.
    """

    def __init__(self, margin: float, window: int, spread_min: float = 0.05, loss_tol: float = 0.05) -> None:
        self.margin, self.spread_min, self.loss_tol = margin, spread_min, loss_tol
        self._recent: deque[bool] = deque(maxlen=window)
        self.collapsed = False

    def update(self, step: int, loss: float, emb_std: float) -> bool:
        """Feed one step; returns True while collapsed, warning loudly when it starts and ends."""
        pinned = abs(loss - self.margin) <= self.loss_tol * self.margin and emb_std < self.spread_min
        self._recent.append(pinned)
        now = len(self._recent) == self._recent.maxlen and all(self._recent)
        if now and not self.collapsed:
            log.warning(
                "EMBEDDING COLLAPSE at step %d: loss %.4f pinned at margin %.3f and emb_std %.4f < %.3f for %d "
                "steps; every patch maps to the same point. Lower the lr, delay hard mining (mine.hard_from_step) "
                "or check that batches hold several videos.",
                step,
                loss,
                self.margin,
                emb_std,
                self.spread_min,
                self._recent.maxlen,
            )
        elif self.collapsed and not pinned:
            log.warning("embedding spread recovered at step %d (emb_std %.4f)", step, emb_std)
        self.collapsed = now or (self.collapsed and pinned)
        return self.collapsed


def thumbnails(images: Tensor, px: int = 32) -> Tensor:
    """Small copies for the projector sprite. Args: images: (N, 3, H, W) float. Returns: (N, 3, px, px)."""
    return torch.nn.functional.interpolate(images.float(), size=(px, px), mode="bilinear", antialias=True)


@torch.no_grad()
def embed_loader(
    model: torch.nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    keep_thumbnails: int = 0,
) -> tuple[Tensor, Tensor]:
    """Embed every patch a loader yields, in eval mode (restored afterwards).

    Returns:
        emb: (M, D) float32 on CPU, L2-normalised; thumbs: (min(M, keep_thumbnails), 3, 32, 32).
    """
    was_training = model.training
    model.eval()
    embs, thumbs, kept = [], [], 0
    for images, _ in loader:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            embs.append(model(images.to(device, non_blocking=True)).float().cpu())
        if kept < keep_thumbnails:
            thumbs.append(thumbnails(images[: keep_thumbnails - kept]))
            kept += len(thumbs[-1])
    model.train(was_training)
    emb = torch.cat(embs) if embs else torch.zeros(0, 0)
    return emb, torch.cat(thumbs) if thumbs else torch.zeros(0, 3, 32, 32)

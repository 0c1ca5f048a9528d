"""What a human watches while training: metric writers (TensorBoard, in memory for tests, none).

``train()`` takes a :class:`MetricsWriter`; production passes a :class:`TensorBoardWriter`,
tests pass a :class:`ListWriter` and read the values back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

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

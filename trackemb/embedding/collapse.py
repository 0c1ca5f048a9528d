"""The collapse alarm of training: loss pinned at the margin while embeddings stop spreading."""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger(__name__)


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

"""Validation during training: retrieval on held-out tracks for both candidate embedding layers.

Each validation embeds the held-out patches and scores two layers: the pooled backbone
features and the projection head's output (SimCLR found the representation *before* the
head generalises better; we measure rather than assume). Scores: R@1 and MAP@R of
leave-one-out track retrieval and the effective rank of the embeddings, on the patches as
harvested and again with every patch's context (the surroundings of its box) swapped for
another track's. A track's patches share their surroundings, so the first view rewards
matching the scene; the second asks for the object itself, which is what finding the same
object in another video needs. On scenes held out from training, the mean of the two MAP@R
followed retrieval on new videos where the as-harvested MAP@R alone did not (README,
Quality). The best (step, layer) by that mean is what ``ckpt_best.pt`` keeps and ``export``
ships by default.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from trackemb.embedding.augment import swap_backgrounds
from trackemb.embedding.metrics import retrieval_metrics
from trackemb.embedding.rank import effective_rank

log = logging.getLogger(__name__)

LAYERS = ("backbone", "head")
SELECT_METRIC = "MAP@R_mean"  # mean of MAP@R as harvested and with contexts swapped
Transform = Callable[[Tensor, Tensor], Tensor]


@torch.no_grad()
def embed_both(
    model: torch.nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    transform: Transform | None = None,
) -> dict[str, Tensor]:
    """L2-normalised backbone and head embeddings of every patch, in eval mode (restored after).

    ``transform(images, rows)``, when given, changes each batch before it is embedded.
    """
    was_training = model.training
    model.eval()
    out: dict[str, list[Tensor]] = {layer: [] for layer in LAYERS}
    for images, rows in loader:
        if transform is not None:
            images = transform(images, rows)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            feats, head = model.forward_both(images.to(device, non_blocking=True))
        out["backbone"].append(F.normalize(feats.float(), dim=1).cpu())
        out["head"].append(head.float().cpu())
    model.train(was_training)
    return {layer: torch.cat(parts) if parts else torch.zeros(0, 0) for layer, parts in out.items()}


def score_layers(embeddings: dict[str, Tensor], labels: Tensor) -> dict[str, dict[str, float]]:
    """``{layer: {"R@1", "MAP@R", "rank"}}`` for each layer's embeddings of the held-out patches."""
    scores: dict[str, dict[str, float]] = {}
    for layer, emb in embeddings.items():
        if not bool(torch.isfinite(emb).all()):  # diverged: nothing to rank, and never "best"
            scores[layer] = {"R@1": math.nan, "MAP@R": math.nan, "rank": math.nan}
            continue
        m = retrieval_metrics(emb.numpy(), labels.numpy(), nmi=False)
        scores[layer] = {"R@1": m["R@1"], "MAP@R": m["MAP@R"], "rank": effective_rank(emb)}
    return scores


@dataclass
class BestTracker:
    """Remembers the best validation (step, layer) and the step-0 (untrained) scores.

    Args:
        layers: layers allowed to win (``TrainConfig.embed_layer``: one, or both with "auto").
    """

    layers: tuple[str, ...]
    best: dict[str, float | int | str] | None = None
    initial: dict[str, dict[str, float]] | None = None
    history: list[dict] = field(default_factory=list)

    def update(self, step: int, scores: dict[str, dict[str, float]]) -> bool:
        """Record one validation; True when it is a new best (then save ``ckpt_best.pt``)."""
        if self.initial is None and step == 0:
            self.initial = scores
        self.history.append(
            {"step": step, **{f"{lay}/{k}": v for lay, s in scores.items() for k, v in s.items()}}
        )
        layer = max(self.layers, key=lambda lay: _finite(scores[lay][SELECT_METRIC]))
        value = _finite(scores[layer][SELECT_METRIC])
        if self.best is None or value > float(self.best["score"]):
            self.best = {"step": step, "layer": layer, "score": value, "metric": SELECT_METRIC,
                         **{k: v for k, v in scores[layer].items()}}  # fmt: skip
            return True
        return False

    def state(self) -> dict:
        return {"best": self.best, "initial": self.initial, "history": self.history}

    def load(self, state: dict | None) -> None:
        if state:
            self.best, self.initial = state.get("best"), state.get("initial")
            self.history = list(state.get("history") or [])


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


class RankCollapseDetector:
    """Dimensional collapse: effective rank far below the untrained network's.

    The spread-based detector misses this: an encoder that only tells a handful of scenes
    apart keeps a healthy overall spread while using 3 of 128 dimensions.
    """

    def __init__(self, frac: float = 0.25) -> None:
        self.frac = frac
        self.reference: float | None = None

    def update(self, step: int, rank: float, layer: str) -> bool:
        if self.reference is None:
            self.reference = rank
            return False
        collapsed = math.isfinite(rank) and rank < self.frac * self.reference
        if collapsed:
            log.warning(
                "DIMENSIONAL COLLAPSE at step %d: effective rank of the held-out %s embeddings is %.1f, "
                "below %.0f%% of the untrained network's %.1f; the encoder uses a few directions only "
                "(e.g. it tells scenes apart). Lower the lr, add reg = \"vicreg\", or add videos.",
                step, layer, rank, 100 * self.frac, self.reference,
            )  # fmt: skip
        return collapsed


class Validator:
    """Validation at a step: both layers scored, TensorBoard and the log written, the best kept.

    Args:
        model: the :class:`~trackemb.embedding.model.Encoder` being trained.
        loader: held-out patches (images, row). labels: (M,) their track labels.
        layers: layers that may win keep-best. save_best: called with :meth:`BestTracker.state`
            whenever a validation is the best so far (step 0 included).
        enabled: False on ranks other than 0 or without held-out patches (then it does nothing).
        collapse_layer: whose effective rank the dimensional-collapse detector watches.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loader: Iterable[tuple[Tensor, Tensor]],
        labels: Tensor,
        writer: Any,
        layers: tuple[str, ...],
        device: torch.device,
        amp_dtype: torch.dtype | None,
        save_best: Callable[[dict], None],
        *,
        enabled: bool,
        collapse_layer: str,
    ) -> None:
        self.model, self.loader, self.labels, self.writer = model, loader, labels, writer
        self.device, self.amp_dtype, self.save_best, self.enabled = device, amp_dtype, save_best, enabled
        self.best = BestTracker(layers)
        self.collapse = RankCollapseDetector()
        self.collapse_layer = collapse_layer

    def load(self, state: dict | None) -> None:
        """Continue from a checkpoint's :meth:`BestTracker.state` (resume)."""
        self.best.load(state)
        if self.best.initial is not None:
            self.collapse.reference = self.best.initial.get(self.collapse_layer, {}).get("rank")

    def _swap_contexts(self, images: Tensor, rows: Tensor) -> Tensor:
        """Every patch's context from another track's patch of the batch, the same at every step."""
        gen = torch.Generator().manual_seed(int(rows[0]))
        return swap_backgrounds(images, 1.0, gen, labels=self.labels[rows])

    def __call__(self, step: int) -> dict[str, dict[str, float]] | None:
        if not self.enabled:
            return None
        model, loader, device, amp = self.model, self.loader, self.device, self.amp_dtype
        scores = score_layers(embed_both(model, loader, device, amp), self.labels)
        swapped = score_layers(embed_both(model, loader, device, amp, self._swap_contexts), self.labels)
        for layer, values in scores.items():
            values["ctx_R@1"], values["ctx_MAP@R"] = swapped[layer]["R@1"], swapped[layer]["MAP@R"]
            values[SELECT_METRIC] = (values["MAP@R"] + values["ctx_MAP@R"]) / 2
        for layer, values in scores.items():
            for key, value in values.items():
                self.writer.scalar(f"val/{layer}/{key}", value, step)
        self.writer.scalar("val/R@1", scores["head"]["R@1"], step)
        log.info(
            "step %d: held-out %s over %d patches", step,
            "; ".join(f"{lay} R@1 {v['R@1']:.3f} MAP@R {v['MAP@R']:.3f} (context swapped "
                      f"{v['ctx_MAP@R']:.3f}) rank {v['rank']:.1f}"
                      for lay, v in scores.items()), len(self.labels),
        )  # fmt: skip
        rank = scores[self.collapse_layer]["rank"]
        self.writer.scalar("val/collapse", float(self.collapse.update(step, rank, self.collapse_layer)), step)
        if self.best.update(step, scores):
            self.save_best(self.best.state())
        return scores

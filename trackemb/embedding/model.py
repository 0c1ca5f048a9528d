"""Encoder = backbone + projection head + L2 norm, built by name through a registry.

The same module embeds anchors, positives and negatives (Siamese means shared
weights, never a second copy). It takes RGB in [0, 1] and normalises inside, so an
exported encoder needs no preprocessing contract beyond size and value range.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from trackemb.errors import TrainingError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBED_LAYERS = ("head", "backbone")

# A builder returns a backbone mapping (B, 3, H, W) -> (B, F) pooled features, and F.
BackboneBuilder = Callable[[], tuple[nn.Module, int]]
_ENCODERS: dict[str, BackboneBuilder] = {}


def register_encoder(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Register a backbone builder under ``name``.

    Raises:
        ValueError: ``name`` is already registered (two builders must not shadow each other).
    """

    def wrap(fn: BackboneBuilder) -> BackboneBuilder:
        if name in _ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        _ENCODERS[name] = fn
        return fn

    return wrap


def list_encoders() -> list[str]:
    """Names accepted by :func:`build_encoder`."""
    return sorted(_ENCODERS)


def _torchvision_resnet(name: str) -> tuple[nn.Module, int]:
    net = getattr(torchvision.models, name)(weights=None)
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feat_dim


@register_encoder("resnet18")
def _resnet18() -> tuple[nn.Module, int]:
    return _torchvision_resnet("resnet18")


@register_encoder("resnet34")
def _resnet34() -> tuple[nn.Module, int]:
    return _torchvision_resnet("resnet34")


@register_encoder("resnet50")
def _resnet50() -> tuple[nn.Module, int]:
    return _torchvision_resnet("resnet50")


@register_encoder("smallcnn")
def _smallcnn() -> tuple[nn.Module, int]:
    """Four stride-2 conv blocks; seconds to train on CPU, used by tests and smoke runs."""
    layers: list[nn.Module] = []
    channels = [3, 16, 32, 64, 128]
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        ]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), channels[-1]


class Encoder(nn.Module):
    """Backbone + projection MLP + L2 normalisation.

    Args:
        backbone: maps (B, 3, H, W) normalised images to (B, feat_dim) features.
        feat_dim: backbone output width.
        arch: registry name, kept so the encoder can be rebuilt from :meth:`model_args`.
        embed_dim: width of the projection head's output.
        input_px: side of the square input the encoder was trained at.
        embed_layer: what :meth:`forward` returns: ``"head"`` (the projection, width
            ``embed_dim``; what the loss trains) or ``"backbone"`` (the pooled features before
            the head, width ``feat_dim``; SimCLR found these generalise better). Both are
            L2-normalised.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        *,
        arch: str,
        embed_dim: int,
        input_px: int,
        embed_layer: str = "head",
    ) -> None:
        super().__init__()
        if embed_layer not in EMBED_LAYERS:
            raise ValueError(f"embed_layer must be one of {EMBED_LAYERS}, got {embed_layer!r}")
        self.embed_layer = embed_layer
        self.arch = arch
        self.embed_dim = embed_dim
        self.input_px = input_px
        self.feat_dim = feat_dim
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(feat_dim, feat_dim), nn.ReLU(), nn.Linear(feat_dim, embed_dim))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def freeze_batchnorm_stats(self, frozen: bool = True) -> Encoder:
        """Keep every BatchNorm layer in eval mode, whatever :meth:`train` is called with.

        Its running statistics then stay as they are (at init: mean 0, variance 1) and the batch's
        are never used; only its affine scale and shift still learn. Returns ``self``.
        """
        self._frozen_bn = frozen
        return self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        if getattr(self, "_frozen_bn", False):
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train(False)
        return self

    def model_args(self) -> dict[str, Any]:
        """Everything needed to rebuild this module (stored in checkpoints and model cards)."""
        return {
            "arch": self.arch,
            "embed_dim": self.embed_dim,
            "input_px": self.input_px,
            "embed_layer": self.embed_layer,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        }

    def forward_features(self, x: Tensor) -> Tensor:
        """Args: x: (B, 3, H, W) float RGB in [0, 1]. Returns: (B, feat_dim) pooled backbone features."""
        return self.backbone((x - self.mean) / self.std)

    def forward_head(self, feats: Tensor) -> Tensor:
        """Args: feats: (B, feat_dim). Returns: (B, D) unnormalised projection."""
        return self.head(feats)

    def forward_both(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Args: x: (B, 3, H, W) in [0, 1]. Returns: (raw backbone features (B, F), L2-normalised head (B, D))."""
        feats = self.forward_features(x)
        return feats, F.normalize(self.forward_head(feats), dim=1)

    @property
    def out_dim(self) -> int:
        """Width of :meth:`forward`'s output."""
        return self.feat_dim if self.embed_layer == "backbone" else self.embed_dim

    def forward(self, x: Tensor) -> Tensor:
        """Args: x: (B, 3, H, W) float RGB in [0, 1]. Returns: emb: (B, out_dim) float, L2-normalised."""
        feats = self.forward_features(x)
        if self.embed_layer == "backbone":
            return F.normalize(feats, dim=1)
        return F.normalize(self.forward_head(feats), dim=1)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise TrainingError(f"{path}: init_weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a trackemb checkpoint
    if not isinstance(state, dict):
        raise TrainingError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_backbone_weights(encoder: Encoder, path: str | Path) -> None:
    """Load a backbone state dict (``.pth`` or ``.safetensors``) into ``encoder.backbone``.

    Keys may be bare (a torchvision checkpoint; its ``fc.*`` is ignored) or prefixed with
    ``backbone.`` (a trackemb export or checkpoint).

    Raises:
        TrainingError: missing file, or a state dict that does not fit the backbone.
    """
    path = Path(path)
    state = _read_state_dict(path)
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        result = encoder.backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise TrainingError(f"{path}: weights do not fit backbone {encoder.arch!r}: {exc}") from exc
    if result.missing_keys:
        raise TrainingError(
            f"{path}: weights do not fit backbone {encoder.arch!r}; missing {result.missing_keys[:5]}..."
        )
    if result.unexpected_keys:
        log.warning("%s: ignored %d unexpected keys", path, len(result.unexpected_keys))
    log.info("loaded backbone weights from %s", path)


def build_encoder(
    arch: str, embed_dim: int, input_px: int, init_weights: str | None = None, embed_layer: str = "head"
) -> Encoder:
    """Build a registered encoder, optionally starting from local backbone weights.

    Raises:
        ValueError: unknown ``arch`` (the message lists the known ones).
        TrainingError: ``init_weights`` cannot be loaded.
    """
    if arch not in _ENCODERS:
        raise ValueError(f"unknown encoder {arch!r}; known: {', '.join(list_encoders())}")
    backbone, feat_dim = _ENCODERS[arch]()
    encoder = Encoder(
        backbone, feat_dim, arch=arch, embed_dim=embed_dim, input_px=input_px, embed_layer=embed_layer
    )
    if init_weights:
        load_backbone_weights(encoder, init_weights)
    return encoder


def encoder_from_args(model_args: dict[str, Any]) -> Encoder:
    """Rebuild an (untrained) encoder from :meth:`Encoder.model_args`, e.g. a checkpoint's."""
    return build_encoder(
        model_args["arch"],
        int(model_args["embed_dim"]),
        int(model_args["input_px"]),
        embed_layer=str(model_args.get("embed_layer", "head")),
    )

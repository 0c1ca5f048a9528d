"""Generic encoder tests (timm style): shape, unit norm, no NaN, every parameter learns."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from trackemb.embedding.model import (
    Encoder,
    build_encoder,
    encoder_from_args,
    list_encoders,
    load_backbone_weights,
    register_encoder,
)
from trackemb.errors import TrainingError


@pytest.mark.parametrize("arch", ["smallcnn", "resnet18"])
def test_forward_shape_norm_and_gradients(arch):
    torch.manual_seed(0)
    model = build_encoder(arch, embed_dim=16, input_px=64)
    x = torch.rand(6, 3, 64, 64)
    emb = model(x)
    assert emb.shape == (6, 16) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    assert torch.allclose(emb.norm(dim=1), torch.ones(6), atol=1e-5)
    assert model.forward_features(x).shape == (6, model.feat_dim)
    # A triplet-like objective on the concatenated batch reaches every parameter.
    (emb[:2] * emb[2:4]).sum().neg().add((emb[:2] * emb[4:]).sum()).backward()
    missing = [
        name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert missing == []
    assert sum(float(p.grad.abs().sum()) > 0 for p in model.parameters()) == len(list(model.parameters()))


def test_encoder_takes_unit_range_rgb_and_normalises_itself():
    model = build_encoder("smallcnn", 8, 32).eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    direct = model.head(model.backbone((x - model.mean) / model.std))
    assert torch.allclose(model(x), torch.nn.functional.normalize(direct, dim=1), atol=1e-6)


def test_registry_lists_required_archs_and_rejects_duplicates_and_unknowns():
    assert {"resnet18", "resnet34", "resnet50", "smallcnn"} <= set(list_encoders())
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("smallcnn")(lambda: (nn.Identity(), 3))
    with pytest.raises(ValueError, match="known: .*smallcnn"):
        build_encoder("no_such_net", 8, 32)


def test_model_args_rebuild_the_same_architecture():
    model = build_encoder("smallcnn", 24, 48)
    args = model.model_args()
    assert args["arch"] == "smallcnn" and args["embed_dim"] == 24 and args["input_px"] == 48
    assert len(args["mean"]) == len(args["std"]) == 3
    rebuilt = encoder_from_args(args)
    assert isinstance(rebuilt, Encoder)
    rebuilt.load_state_dict(model.state_dict())  # strict: same keys and shapes
    assert rebuilt.model_args() == args


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "prefixed_pth"])
def test_init_weights_load_backbone_from_local_file(tmp_path, fmt):
    torch.manual_seed(1)
    source = build_encoder("smallcnn", 8, 32)
    path = tmp_path / f"w.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(path))
    elif fmt == "pth":
        torch.save(source.backbone.state_dict(), path)
    else:
        torch.save({"model": source.state_dict()}, path)  # a trackemb checkpoint
    torch.manual_seed(2)
    target = build_encoder("smallcnn", 8, 32, init_weights=str(path))
    for (name, a), b in zip(
        source.backbone.state_dict().items(), target.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_init_weights_errors_name_the_file(tmp_path):
    with pytest.raises(TrainingError, match="not found"):
        build_encoder("smallcnn", 8, 32, init_weights=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save(build_encoder("smallcnn", 8, 32).backbone.state_dict(), wrong)
    with pytest.raises(TrainingError, match="wrong.pth"):
        load_backbone_weights(build_encoder("resnet18", 8, 32), wrong)

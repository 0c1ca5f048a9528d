"""Export directory contract: TorchScript/ONNX reproduce the model, load_encoder rebuilds a trainable one,
and an untrusted or tampered model card is refused."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from embed_fixtures import make_run_dir

import trackemb
from trackemb.config import ExportConfig
from trackemb.embedding.card import ModelCardError, sha256_file
from trackemb.embedding.export import ExportError, encoder_from_checkpoint, export_encoder, load_encoder

PX, DIM = 32, 16


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    run = make_run_dir(root / "run", embed_dim=DIM, input_px=PX)
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    ckpt["metrics"] = {"loss": 0.3, "val_r1": float("nan")}  # as training stores them
    torch.save(ckpt, run / "ckpt.pt")
    (run / "metrics.json").write_text(json.dumps({"val_R@1": 0.42}))
    # Shaped like PatchStore stats: scalars plus per-video lists that the card leaves out.
    stats = {"videos": 5, "videos_done": 5, "pairs": 40, "per_video": [{"sha": "ab"}], "used_bytes": 10}
    out = export_encoder(run, root / "export", ExportConfig(), store_summary=stats)
    return run, out


@pytest.fixture
def model(exported) -> torch.nn.Module:
    return encoder_from_checkpoint(exported[0])[0]


def test_card_describes_the_encoder(exported):
    _, out = exported
    card = json.loads((out / "model_card.json").read_text())
    assert card["input_size"] == [PX, PX]
    assert card["embedding_dim"] == DIM
    assert card["architecture"] == "smallcnn"
    assert len(card["mean"]) == 3 and len(card["std"]) == 3
    assert card["training_data"] == {
        "videos": 5,
        "videos_done": 5,
        "pairs": 40,
        "used_bytes": 10,
    }
    validation = card["metrics"].pop("validation")
    assert validation["exported"] == "best" and validation["exported_step"] is not None
    assert card["metrics"] == {"loss": 0.3, "val_r1": None, "val_R@1": 0.42}  # NaN is not JSON
    assert card["embedding_layer"] == "head" and card["head_dim"] == DIM
    assert card["trackemb_version"] == trackemb.__version__
    assert card["config"]["arch"] == "smallcnn" and card["config"]["input_px"] == PX
    names = {f["name"]: f for f in card["files"]}
    assert {"encoder.ts", "encoder.safetensors"} <= set(names)
    for name, entry in names.items():
        assert sha256_file(out / name) == entry["sha256"]
    assert not list(out.glob(".*.tmp*")), "temporary files left behind"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_matches_model_for_any_batch(exported, model):
    ts = torch.jit.load(str(exported[1] / "encoder.ts"))
    torch.manual_seed(1)
    with torch.no_grad():
        x = torch.rand(4, 3, PX, PX)
        out = ts(x)
        torch.testing.assert_close(out, model(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(4), atol=1e-5, rtol=0)
        for batch in (1, 9):
            assert ts(torch.rand(batch, 3, PX, PX)).shape == (batch, DIM)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
def test_onnx_matches_model_with_dynamic_batch(exported, model):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported[1] / "encoder.onnx"), providers=["CPUExecutionProvider"])
    torch.manual_seed(2)
    for batch in (1, 5):
        x = torch.rand(batch, 3, PX, PX)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(got, model(x), atol=1e-4, rtol=0)


def test_load_encoder_is_trainable(exported, model):
    enc = trackemb.load_encoder(str(exported[1]))
    x = torch.rand(6, 3, PX, PX)
    with torch.no_grad():
        torch.testing.assert_close(enc.eval()(x), model(x), atol=1e-6, rtol=0)
    enc.train()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    assert all(p.requires_grad for p in enc.parameters())
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    target = torch.nn.functional.normalize(torch.randn(6, DIM), dim=1)
    loss = (1 - (enc(x) * target).sum(dim=1)).mean()
    loss.backward()
    opt.step()
    changed = [k for k, v in enc.state_dict().items() if not torch.equal(v, before[k])]
    assert any("head" in k for k in changed) and any("backbone" in k for k in changed)


def _tamper_card(out: Path, edit) -> None:
    path = out / "model_card.json"
    card = json.loads(path.read_text())
    edit(card)
    path.write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda c: c.update(architecture="vit_huge_from_the_internet"), "unknown architecture"),
        (lambda c: c.pop("embedding_dim"), "embedding_dim"),
        (lambda c: c.update(input_size="big"), "input_size"),
        (lambda c: c.update(input_size=[100000, 100000]), "input_size"),
        (lambda c: c.update(std=[0.0, 0.2, 0.2]), "std"),
        (lambda c: c.update(card_schema=99), "card_schema"),
        (lambda c: c.update(run_this="import os"), "run_this"),
        (lambda c: c["files"][0].update(name="../../etc/passwd"), "files"),
        (
            lambda c: c.update(files=[f for f in c["files"] if f["name"] != "encoder.safetensors"]),
            "encoder.safetensors",
        ),
    ],
)
def test_invalid_card_is_refused(exported, tmp_path, edit, reason):
    out = Path(shutil.copytree(exported[1], tmp_path / "copy"))
    _tamper_card(out, edit)
    with pytest.raises(ModelCardError, match=reason) as info:
        load_encoder(out)
    assert str(out / "model_card.json") in str(info.value)


def test_card_that_is_not_json_is_refused(exported, tmp_path):
    out = Path(shutil.copytree(exported[1], tmp_path / "copy"))
    (out / "model_card.json").write_text("{not json")
    with pytest.raises(ModelCardError, match="model_card.json: not valid JSON"):
        load_encoder(out)


def test_tampered_weights_are_refused(exported, tmp_path):
    out = Path(shutil.copytree(exported[1], tmp_path / "copy"))
    blob = bytearray((out / "encoder.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (out / "encoder.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ModelCardError, match="encoder.safetensors: sha256 .* does not match"):
        load_encoder(out)


def test_card_that_does_not_fit_the_weights_is_refused(exported, tmp_path):
    out = Path(shutil.copytree(exported[1], tmp_path / "copy"))
    _tamper_card(out, lambda c: c.update(embedding_dim=DIM * 2))
    with pytest.raises(ModelCardError, match="weights do not fit smallcnn"):
        load_encoder(out)


def test_checkpoint_needing_pickle_is_refused(tmp_path):
    run = make_run_dir(tmp_path / "run", embed_dim=DIM, input_px=PX)
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    ckpt["extra"] = ExportConfig()  # an arbitrary Python object: loading it would need pickle
    torch.save(ckpt, run / "ckpt.pt")
    with pytest.raises(ExportError, match=r"ckpt\.pt: cannot load checkpoint"):
        export_encoder(run, tmp_path / "out", ExportConfig(onnx=False))
    assert not (tmp_path / "out" / "model_card.json").exists()


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(ExportError, match=r"ckpt\.pt: no checkpoint"):
        export_encoder(tmp_path, tmp_path / "out", ExportConfig(onnx=False))


@pytest.mark.parametrize("batchnorm", ["batch", "frozen"])
def test_load_encoder_fine_tunes_with_batch_statistics_however_training_ran(tmp_path, batchnorm):
    run = make_run_dir(tmp_path / "run", embed_dim=DIM, input_px=PX, batchnorm=batchnorm)
    enc = load_encoder(export_encoder(run, tmp_path / "export", ExportConfig(onnx=False)))
    bn = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert enc.training and bn and all(m.training for m in bn)
    before = [m.running_mean.clone() for m in bn]
    enc(torch.rand(4, 3, PX, PX))  # a fine-tuning forward learns the user's statistics
    assert all(not torch.equal(b, m.running_mean) for b, m in zip(before, bn, strict=True))

"""The downstream example runs end to end on an exported encoder and reports both inits."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from conftest import REPO
from embed_fixtures import make_run_dir
from torch import nn

from trackemb.config import ExportConfig
from trackemb.embedding.export import export_encoder


@pytest.fixture(scope="module")
def finetune_example():
    # Loaded in-process: a subprocess would pay the torch import again for the same code path.
    spec = importlib.util.spec_from_file_location("finetune_example", REPO / "examples" / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetune_example_quick(finetune_example, tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", embed_dim=16, input_px=32, seed=3)
    export = export_encoder(run, tmp_path / "export", ExportConfig(onnx=False))
    out = tmp_path / "digits.json"
    finetune_example.main([str(export), "--quick", "--out", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert "linear probe" in printed and "random_init" in printed
    report = json.loads(out.read_text())
    assert report["quick"] and report["epochs"] == 1 and report["train_images"] == 300
    assert set(report["results"]) == {"pretrained", "random_init"}
    for name, scores in report["results"].items():
        assert set(scores) == {"linear_probe", "finetune"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())
        # The printed table shows the numbers the JSON holds.
        assert f"{name:<12} {scores['linear_probe']:>12.3f} {scores['finetune']:>10.3f}" in printed
    assert report["test_images"] == 150


def test_finetune_help_describes_flags(finetune_example):
    text = finetune_example.get_args_parser().format_help()
    for flag in ("export_dir", "--epochs", "--quick", "--train-images", "--out", "--device"):
        assert flag in text


def test_recalibrate_batchnorm_replaces_stale_running_stats(finetune_example):
    # Stale stats stand in for those a short fine-tune leaves behind (EMA still at older weights).
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(96, 3, 8, 8, generator=gen) * 4.0 + 2.0
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[0].running_mean.fill_(-5.0)
    model[0].running_var.fill_(100.0)
    finetune_example.recalibrate_batchnorm(model, images, torch.device("cpu"), batch=32)
    assert not model.training
    assert all(m.momentum == 0.1 for m in (model[0], model[2]))
    torch.testing.assert_close(model[0].running_mean, images.mean((0, 2, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(model[0].running_var, images.var((0, 2, 3)), rtol=0.05, atol=0)
    # With the stats recalibrated, eval mode normalises the data it saw like training mode does.
    with torch.no_grad():
        eval_out = model(images)
        want = model.train()(images)
    torch.testing.assert_close(eval_out, want, atol=0.05, rtol=0)

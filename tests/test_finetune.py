"""The downstream example runs end to end on an exported encoder and reports both inits."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO
from embed_fixtures import make_run_dir

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

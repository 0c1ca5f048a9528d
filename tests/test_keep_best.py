"""Keep-best selection, the persisted held-out split, and what export and evaluate read from them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from trackemb.config import ExportConfig, TrainConfig
from trackemb.embedding.checkpoint import load_checkpoint
from trackemb.embedding.validate import SELECT_METRIC, BestTracker


def _scores(backbone: float, head: float) -> dict[str, dict[str, float]]:
    return {
        "backbone": {"R@1": backbone, "MAP@R": 1.0, "ctx_MAP@R": 2 * backbone - 1.0, SELECT_METRIC: backbone},
        "head": {"R@1": head, "MAP@R": 1.0, "ctx_MAP@R": 2 * head - 1.0, SELECT_METRIC: head},
    }


def test_best_tracker_keeps_the_highest_mean_map_of_allowed_layers_step0_included() -> None:
    auto = BestTracker(("backbone", "head"))
    assert auto.update(0, _scores(0.50, 0.40))  # the untrained network is the first best
    assert not auto.update(10, _scores(0.45, 0.48))  # both below 0.50: not better
    assert auto.update(20, _scores(0.49, 0.60)) and auto.best["layer"] == "head" and auto.best["step"] == 20
    assert not auto.update(30, _scores(0.59, 0.30))
    assert auto.initial == _scores(0.50, 0.40) and len(auto.history) == 4

    head_only = BestTracker(("head",))
    for step, s in enumerate([_scores(0.9, 0.4), _scores(0.9, 0.3), _scores(0.1, 0.5)]):
        head_only.update(step, s)
    assert head_only.best["step"] == 2 and head_only.best["layer"] == "head"

    diverged = BestTracker(("head",))
    diverged.update(0, _scores(0.2, 0.2))
    assert not diverged.update(1, _scores(math.nan, math.nan))  # NaN never wins


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    from synth_store import build_synthetic_store

    from trackemb.embedding.train import train

    root = tmp_path_factory.mktemp("best")
    store = build_synthetic_store(root / "store", n_videos=8, tracks_per_video=4, patches_per_track=3)
    cfg = TrainConfig(
        arch="smallcnn", embed_dim=16, input_px=32, steps=6, batch_pairs=8, num_workers=0, val_frac=0.25,
        val_every_steps=2, ckpt_every_steps=2, warmup_steps=1, lr=3e-3, projector_max_patches=0,
    )  # fmt: skip
    train(store, root / "run", cfg)
    return store, root / "run"


def test_best_checkpoint_split_and_card(run, tmp_path) -> None:
    from trackemb.embedding.export import encoder_from_checkpoint, export_encoder

    store, run_dir = run
    last, best = load_checkpoint(run_dir / "ckpt.pt"), load_checkpoint(run_dir / "ckpt_best.pt")
    history = last["best"]["history"]
    assert [h["step"] for h in history] == [0, 2, 4, 6]
    for h in history:  # selection: the mean of MAP@R as harvested and with contexts swapped
        for layer in ("backbone", "head"):
            mean = (h[f"{layer}/MAP@R"] + h[f"{layer}/ctx_MAP@R"]) / 2
            assert h[f"{layer}/{SELECT_METRIC}"] == pytest.approx(mean)
    top = max(history, key=lambda h: max(h[f"backbone/{SELECT_METRIC}"], h[f"head/{SELECT_METRIC}"]))
    assert best["step"] == top["step"] == last["best"]["best"]["step"]
    layer = last["best"]["best"]["layer"]

    model_best, ck = encoder_from_checkpoint(run_dir, "best")
    model_last, _ = encoder_from_checkpoint(run_dir, "last")
    assert ck["step"] == best["step"] and model_best.embed_layer == layer == model_last.embed_layer

    out = export_encoder(run_dir, tmp_path / "export", ExportConfig(onnx=False))
    card = json.loads((out / "model_card.json").read_text())
    validation = card["metrics"]["validation"]
    assert card["step"] == best["step"] and card["embedding_layer"] == layer
    assert validation["step_0"]["head"]["MAP@R"] == pytest.approx(history[0]["head/MAP@R"])
    assert validation["last"]["step"] == 6 and validation["best"]["step"] == best["step"]
    split = json.loads((run_dir / "split.json").read_text())
    assert card["training_data"]["videos"] == len(split["train_videos"]) == 6
    assert card["training_data"]["held_out_videos"] == len(split["val_videos"]) == 2
    ts = torch.jit.load(str(out / "encoder.ts"))
    assert ts(torch.rand(2, 3, 32, 32)).shape[1] == card["embedding_dim"] == model_best.out_dim


def test_split_is_persisted_and_later_videos_are_never_held_out(run, tmp_path) -> None:
    from synth_store import synthetic_harvest

    from trackemb.embedding.evaluate import evaluate_run
    from trackemb.storage.store import PatchStore

    store, run_dir = run
    split = json.loads((run_dir / "split.json").read_text())
    grown = Path(shutil.copytree(store, tmp_path / "grown"))
    with PatchStore.open(grown) as writer:  # videos harvested after training
        for v in (100, 101, 102):
            writer.put_video(synthetic_harvest(v, tracks=4, patches_per_track=3, patch_px=40, seed=0))
    report = evaluate_run(run_dir, grown, out_dir=tmp_path / "eval", device="cpu")
    assert sorted(report["split"]["videos"]) == sorted(split["val_videos"])
    assert report["methods"]["trained"]["eff_rank"] > 1.0


def test_context_swapped_validation_tells_an_object_encoder_from_a_scene_encoder() -> None:
    """Two tracks per scene, scenes as flat backgrounds, objects as flat squares in the box.

    An encoder that reads only the border (the scene) matches a track's patches as harvested
    but not once the contexts are swapped; one that reads only the centre (the object) does both.
    """
    from trackemb.embedding.augment import BOX_SIDE_FRAC
    from trackemb.embedding.validate import Validator

    px, scenes, per_track = 32, 6, 3
    gen = torch.Generator().manual_seed(0)
    images, labels = [], []
    inner = int(px * BOX_SIDE_FRAC / 2) - 2
    for scene in range(scenes):
        background = torch.rand(3, 1, 1, generator=gen)
        for obj in range(2):
            colour = torch.rand(3, 1, 1, generator=gen)
            for _ in range(per_track):
                img = background.expand(3, px, px).clone()
                img[:, px // 2 - inner : px // 2 + inner, px // 2 - inner : px // 2 + inner] = colour
                images.append(img + 0.01 * torch.rand(3, px, px, generator=gen))
                labels.append(2 * scene + obj)
    x, y = torch.stack(images), torch.tensor(labels)
    loader = [(x[i : i + 12], torch.arange(i, min(i + 12, len(x)))) for i in range(0, len(x), 12)]

    class Reads(torch.nn.Module):
        def __init__(self, where: str) -> None:
            super().__init__()
            self.where = where

        def forward_both(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            border = images[:, :, :2, :2].mean((2, 3))
            centre = images[:, :, px // 2 - 2 : px // 2 + 2, px // 2 - 2 : px // 2 + 2].mean((2, 3))
            feats = torch.cat([border, 0 * centre] if self.where == "scene" else [0 * border, centre], 1)
            return feats, torch.nn.functional.normalize(feats, dim=1)

    class Sink:
        def scalar(self, *args: object) -> None:
            pass

    results = {}
    for where in ("scene", "object"):
        validate = Validator(
            Reads(where), loader, y, Sink(), ("backbone",), torch.device("cpu"), None, lambda state: None,
            enabled=True, collapse_layer="backbone",
        )  # fmt: skip
        results[where] = validate(0)["backbone"]
        assert validate(1)["backbone"] == results[where]  # the same swap at every validation
    # As harvested, reading the scene finds the own track half the time (two tracks per scene)...
    assert results["scene"]["MAP@R"] >= 0.3 and results["object"]["MAP@R"] > 0.95
    # ...and with the contexts swapped it no longer finds it; the object reader still does.
    assert results["scene"]["ctx_MAP@R"] < 0.3 and results["object"]["ctx_MAP@R"] > 0.95
    assert results["object"][SELECT_METRIC] > results["scene"][SELECT_METRIC]

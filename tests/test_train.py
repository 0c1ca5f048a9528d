"""Training on a real synthetic PatchStore: learning, exact resume, checkpoints, TensorBoard, DDP."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trackemb.config import MineConfig, TrainConfig
from trackemb.embedding.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from trackemb.embedding.collapse import CollapseDetector
from trackemb.embedding.metrics import recall_at_1
from trackemb.embedding.model import build_encoder, encoder_from_args
from trackemb.embedding.monitor import ListWriter
from trackemb.embedding.train import lr_at, train
from trackemb.errors import TrainingError
from trackemb.storage.store import open_reader

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from synth_store import build_synthetic_store

    return build_synthetic_store(
        tmp_path_factory.mktemp("train") / "store", n_videos=12, tracks_per_video=6, patches_per_track=3
    )


def _cfg(**kw) -> TrainConfig:
    base = dict(
        arch="smallcnn",
        embed_dim=32,
        input_px=32,
        steps=12,
        batch_pairs=16,
        num_workers=0,
        val_frac=0.25,
        val_every_steps=6,
        ckpt_every_steps=6,
        log_every_steps=1,
        warmup_steps=3,
        lr=2e-3,
        aug_min_strength=0.3,
        aug_max_strength=0.3,
        projector_max_patches=0,
    )
    return TrainConfig(**(base | kw))


def test_training_lowers_loss_and_beats_the_untrained_encoder(store, tmp_path):
    writer = ListWriter()
    cfg = _cfg(
        steps=150,
        val_frac=0.34,
        val_every_steps=75,
        ckpt_every_steps=150,
        mine=MineConfig(hard_from_step=1000),
    )
    result = train(store, tmp_path / "run", cfg, writer=writer)
    losses = [v for _, v in writer.scalars("train/loss")]
    assert result.step == 150 and len(losses) == 150
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10]), losses
    assert result.val_r1_after >= result.val_r1_before + 0.15, (result.val_r1_before, result.val_r1_after)
    assert [s for s, _ in writer.scalars("val/R@1")] == [0, 75, 150]
    assert not any(v for _, v in writer.scalars("train/collapse"))
    assert {"train/hardest_triplets"} <= writer.tags("images") and "train/pos_dist_hist" in writer.tags(
        "histogram"
    )
    assert (tmp_path / "run" / "config.json").exists()
    ckpt = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["schema"] == 1 and ckpt["step"] == 150 and ckpt["config"]["steps"] == 150
    encoder_from_args(ckpt["model_args"]).load_state_dict(ckpt["model"])


class _Killed(Exception):
    pass


def _kill_at(step_to_die: int):
    def progress(step: int, total: int, metrics: dict) -> None:
        if step == step_to_die:
            raise _Killed

    return progress


def test_resume_replays_a_straight_run_exactly(store, tmp_path):
    # Covers the whole curriculum: harvested triplets, then hard mining from the resumed half.
    cfg = _cfg(mine=MineConfig(hard_from_step=6, use_harvested_triplets=True, strategy_after="wang_gupta"))
    straight = train(store, tmp_path / "a", cfg, writer=ListWriter())
    with pytest.raises(_Killed):
        train(store, tmp_path / "b", cfg, writer=ListWriter(), progress=_kill_at(6))
    assert load_checkpoint(tmp_path / "b" / "ckpt.pt")["step"] == 6
    (tmp_path / "b" / "ckpt.pt.deadbeef.tmp").write_bytes(b"half-written garbage from a killed save")
    resumed_cfg = cfg.model_copy(update={"num_workers": 2})  # batches do not depend on the worker count
    resumed = train(store, tmp_path / "b", resumed_cfg, resume=True, writer=ListWriter())
    assert resumed.step == straight.step == 12
    assert resumed.val_r1_before == straight.val_r1_before
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for name, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][name].float(), atol=1e-5), name
    assert resumed.metrics["loss"] == pytest.approx(straight.metrics["loss"], abs=1e-5)


def test_resume_refuses_another_architecture_and_overwrites_nothing_by_default(store, tmp_path):
    run = tmp_path / "run"
    train(store, run, _cfg(steps=2, ckpt_every_steps=2), writer=ListWriter())
    with pytest.raises(TrainingError, match="model_args"):
        train(store, run, _cfg(steps=4, embed_dim=16), resume=True, writer=ListWriter())
    with pytest.raises(TrainingError, match="resume"):
        train(store, run, _cfg(steps=4), writer=ListWriter())


def test_one_video_cannot_train(tmp_path):
    from synth_store import build_synthetic_store

    one = build_synthetic_store(tmp_path / "one", n_videos=1, triplets_per_pair=0)
    with pytest.raises(TrainingError, match="at least two"):
        train(one, tmp_path / "run", _cfg(), writer=ListWriter())


def test_non_finite_loss_stops_training(store, tmp_path):
    from trackemb.embedding.model import build_encoder

    state = build_encoder("smallcnn", 32, 32).backbone.state_dict()
    state["0.weight"][0, 0, 0, 0] = float("nan")  # a corrupt starting point poisons every embedding
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(TrainingError, match="non-finite loss"):
        train(store, tmp_path / "run", _cfg(init_weights=str(tmp_path / "nan.pth")), writer=ListWriter())


def test_checkpoint_write_is_atomic_and_loads_without_pickle(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1, "model": {"w": torch.ones(2)}})
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises for an unpicklable lambda
        save_checkpoint(path, {"step": 2, "model": {"w": torch.zeros(2)}, "bad": lambda: 0})
    assert load_checkpoint(path)["step"] == 1 and list(tmp_path.iterdir()) == [path]

    torch.save({"schema": 1, "obj": TrainConfig()}, tmp_path / "pickled.pt")  # needs unpickling code
    with pytest.raises(TrainingError, match="pickled.pt"):
        load_checkpoint(tmp_path / "pickled.pt")
    torch.save({"schema": 99}, tmp_path / "future.pt")
    with pytest.raises(TrainingError, match="schema 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1e-2, warmup_steps=10, steps=110, min_lr_frac=0.1)
    lrs = [lr_at(s, cfg) for s in range(cfg.steps + 1)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-2) and lrs[10] == pytest.approx(1e-2)
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[60] == pytest.approx(0.55e-2) and lrs[110] == pytest.approx(1e-3)


def test_recall_at_1_matches_pml_accuracy_calculator():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(20).repeat_interleave(3)
    emb = F.normalize(
        torch.randn(20, 16, generator=gen).repeat_interleave(3, 0) + torch.randn(60, 16, generator=gen), dim=1
    )
    pml = AccuracyCalculator(include=("precision_at_1",), k=1).get_accuracy(emb, labels)["precision_at_1"]
    assert recall_at_1(emb, labels) == pytest.approx(pml)
    # Singletons are not queries, but remain distractors.
    assert math.isnan(recall_at_1(torch.eye(3), torch.tensor([0, 1, 2])))
    assert (
        recall_at_1(F.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1]]), dim=1), torch.tensor([0, 0, 5]))
        == 1.0
    )


def test_collapse_detector_warns_only_after_a_full_window(caplog):
    detector = CollapseDetector(margin=0.5, window=5)
    with caplog.at_level(logging.WARNING, logger="trackemb.embedding.monitor"):
        healthy = [detector.update(s, 0.3, 0.8) for s in range(10)]
        pinned = [detector.update(10 + s, 0.5, 0.001) for s in range(5)]
        recovered = detector.update(15, 0.2, 0.7)
    assert not any(healthy) and pinned == [False] * 4 + [True] and not recovered
    assert "COLLAPSE" in caplog.text and "recovered" in caplog.text


def test_tensorboard_events_hold_the_expected_tags(store, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(steps=4, val_every_steps=2, log_every_steps=2, projector_max_patches=20)
    train(store, tmp_path / "run", cfg)  # writer=None: TensorBoard under run/tb
    tb = tmp_path / "run" / "tb"
    events = EventAccumulator(str(tb), size_guidance={"images": 0, "histograms": 0}).Reload()
    tags = events.Tags()
    assert {
        "train/loss",
        "train/frac_active",
        "train/pos_dist",
        "train/neg_dist",
        "train/emb_std",
        "train/lr",
        "train/samples_per_s",
        "val/R@1",
    } <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("val/R@1")] == [0, 2, 4]
    assert {"train/pos_dist_hist", "train/neg_dist_hist"} <= set(tags["histograms"])
    assert "train/hardest_triplets" in tags["images"]
    assert (tb / "projector_config.pbtxt").exists()
    # Projector metadata: columns to colour by, videos by file name (the synthetic store's paths).
    [meta] = list(tb.rglob("metadata.tsv"))
    lines = meta.read_text().splitlines()
    assert lines[0].split("\t") == ["video", "track", "group"] and len(lines) == 21
    with open_reader(store) as reader:
        names = {Path(v.path).name for v in reader.videos()}
    assert {line.split("\t")[0] for line in lines[1:]} <= names


def _probe(cmd: list[str], probe_dir: Path, timeout: int = 180) -> dict[int, dict]:
    """Run tests/ddp_probe.py under ``cmd``; returns what each rank recorded."""
    probe_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "TRACKEMB_PROBE_DIR": str(probe_dir),
    }
    # Own session, so a hang kills torchrun *and* its workers, not just the launcher.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"training hung:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in probe_dir.glob("rank*.json")}


@pytest.mark.slow
def test_torchrun_two_cpu_processes_follow_the_single_process_data_order(store, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text(
        '[train]\narch = "smallcnn"\nembed_dim = 16\ninput_px = 32\nbatch_pairs = 8\nnum_workers = 0\n'
        "val_every_steps = 3\nckpt_every_steps = 3\nlog_every_steps = 1\nprojector_max_patches = 0\n"
    )
    with socket.socket() as sock:  # a free port for the rendezvous (torchrun's port 0 does not work here)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    probe = [str(REPO / "tests" / "ddp_probe.py"), "--store", str(store), "--config", str(config)]
    ddp_cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(port),
    ]
    ddp = _probe([*ddp_cmd, *probe, "--run-dir", str(tmp_path / "run"), "--steps", "3"], tmp_path / "ddp")
    one = _probe(
        [sys.executable, *probe, "--run-dir", str(tmp_path / "one"), "--steps", "6"], tmp_path / "one-probe"
    )
    ckpt = load_checkpoint(tmp_path / "run" / "ckpt.pt")
    assert ckpt["step"] == 3 and ckpt["sampler"]["world_size"] == 2 and ckpt["config"]["embed_dim"] == 16
    assert all(math.isfinite(float(v.float().sum())) for v in ckpt["model"].values())
    # Step s of rank r trains on global batch 2s + r of the single-process order.
    assert sorted(ddp) == [0, 1] and len(one[0]["batches"]) == 6
    for r in (0, 1):
        assert [b["step"] for b in ddp[r]["batches"]] == [0, 1, 2]
        for b in ddp[r]["batches"]:
            assert b["rows"] == one[0]["batches"][2 * b["step"] + r]["rows"], (r, b["step"])
    assert ddp[1]["wrote"] == [] and ddp[0]["wrote"] == one[0]["wrote"][: len(ddp[0]["wrote"])]
    assert {"checkpoint", "config.json", "tensorboard"} <= set(ddp[0]["wrote"])
    assert len(list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))) == 1


def test_window_groups_train_and_hold_out_whole_windows(tmp_path):
    # One video per "scene" is not enough for other-video negatives; windows make groups of it.
    # 6 tracks start at 0.0-1.5 s: 0.55 s windows -> 3 groups per video; 2 videos -> 6 groups.
    from synth_store import build_synthetic_store

    from trackemb.embedding.data import held_out_split, load_index

    store = build_synthetic_store(tmp_path / "store", n_videos=2, tracks_per_video=6, patches_per_track=3)
    cfg = _cfg(steps=4, negative_window_s=0.55, val_by="group", val_frac=0.34, val_min_tracks=2)
    index = load_index(store, cfg.negative_window_s)
    train_g, val_g = held_out_split(index, cfg)
    assert len(index.group_video) == 6 and len(val_g) == 2 and not np.intersect1d(train_g, val_g).size
    writer = ListWriter()
    result = train(store, tmp_path / "run", cfg, writer=writer)
    assert result.step == 4 and result.val_r1_before is not None and result.val_r1_after is not None
    assert all(v > 0 for _, v in writer.scalars("train/num_triplets"))  # in-video windows give negatives


@pytest.mark.parametrize("batchnorm", ["batch", "frozen"])
def test_frozen_batchnorm_keeps_the_initial_statistics_and_still_learns(store, tmp_path, batchnorm):
    from trackemb.embedding.rundir import CKPT_NAME

    train(store, tmp_path / "run", _cfg(batchnorm=batchnorm, steps=6, val_every_steps=3))
    ckpt = torch.load(tmp_path / "run" / CKPT_NAME, map_location="cpu", weights_only=False)
    start = build_encoder("smallcnn", 32, 32).state_dict()
    stats = [k for k in ckpt["model"] if k.endswith(("running_mean", "running_var"))]
    affine = [k.replace("running_mean", "weight") for k in stats if k.endswith("running_mean")]
    assert stats and affine
    moved = {k: not torch.equal(ckpt["model"][k], start[k]) for k in stats + affine}
    if batchnorm == "frozen":  # statistics exactly as initialised (0 and 1), scales trained
        assert not any(moved[k] for k in stats) and all(moved[k] for k in affine)
    else:
        assert all(moved[k] for k in stats)
    model = build_encoder("smallcnn", 32, 32).freeze_batchnorm_stats(batchnorm == "frozen").train()
    bn_modes = {m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert model.training and bn_modes == {batchnorm == "batch"}
    assert (
        model.eval().train() is model
        and {m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == bn_modes
    )

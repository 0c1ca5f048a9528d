"""--resume refuses what would silently change the run, and a finished run reports its real metrics.

Real training on a small synthetic store. Before the fix, each of these was accepted silently:
another number of processes (the data order changes), other steps (the LR schedule changes);
and resuming a finished run reported no metrics and R@1 after = before.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from trackemb.config import MineConfig, TrainConfig
from trackemb.embedding.checkpoint import restore_training
from trackemb.embedding.data import held_out_split, load_index
from trackemb.embedding.model import build_encoder
from trackemb.embedding.monitor import ListWriter
from trackemb.embedding.rundir import CKPT_NAME
from trackemb.embedding.sampler import train_sampler
from trackemb.embedding.train import train
from trackemb.errors import TrainingError


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from synth_store import build_synthetic_store

    return build_synthetic_store(tmp_path_factory.mktemp("resume") / "store", n_videos=8, tracks_per_video=4)


def _cfg(**kw) -> TrainConfig:
    base = dict(arch="smallcnn", embed_dim=16, input_px=32, steps=6, batch_pairs=8, num_workers=0,
                val_frac=0.25, val_every_steps=3, ckpt_every_steps=3, warmup_steps=2,
                projector_max_patches=0, mine=MineConfig(hard_from_step=1000))  # fmt: skip
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def finished(store, tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    return run, train(store, run, _cfg(), writer=ListWriter())


def _restore(store: Path, run: Path, cfg: TrainConfig, world_size: int, **kw) -> dict:
    index = load_index(store)
    sampler = train_sampler(index, held_out_split(index, cfg)[0], cfg, rank=0, world_size=world_size)
    model = build_encoder(cfg.arch, cfg.embed_dim, cfg.input_px)
    return restore_training(
        run / CKPT_NAME, model=model, optimizer=torch.optim.AdamW(model.parameters()),
        scaler=torch.amp.GradScaler("cuda", enabled=False), sampler=sampler,
        model_args=model.model_args(), config=cfg.model_dump(mode="json"), **kw,
    )  # fmt: skip


def test_resume_refuses_another_number_of_processes(store, finished) -> None:
    run, _ = finished
    with pytest.raises(TrainingError, match=r"trained by 1 process\(es\), this run has 2.*--allow-changes"):
        _restore(store, run, _cfg(), world_size=2)
    assert _restore(store, run, _cfg(), world_size=2, allow_changes=True)["step"] == 6


def test_resume_refuses_changed_steps_and_schedule_unless_allowed(store, finished, tmp_path, caplog) -> None:
    run = Path(shutil.copytree(finished[0], tmp_path / "run"))
    for changed, shown in [({"steps": 9}, "steps 6 -> 9"), ({"lr": 0.01}, "lr 0.0001 -> 0.01"),
                           ({"mine": MineConfig(hard_from_step=4)}, "mine.hard_from_step 1000 -> 4")]:  # fmt: skip
        with pytest.raises(TrainingError, match="refusing to resume") as err:
            train(store, run, _cfg(**changed), resume=True, writer=ListWriter())
        assert shown in str(err.value) and str(run / CKPT_NAME) in str(err.value)
    # Operational settings may change: they do not change what is computed.
    assert train(store, run, _cfg(log_every_steps=2), resume=True, writer=ListWriter()).step == 6
    with caplog.at_level(logging.WARNING):
        longer = train(store, run, _cfg(steps=9), resume=True, writer=ListWriter(), allow_changes=True)
    assert longer.step == 9 and "steps 6 -> 9" in caplog.text


def test_resuming_a_finished_run_reports_its_metrics(store, tmp_path) -> None:
    run = tmp_path / "run"
    first = train(store, run, _cfg(), writer=ListWriter())
    again = train(store, run, _cfg(), resume=True, writer=ListWriter())
    assert again.step == first.step == 6
    assert again.metrics["loss"] == pytest.approx(first.metrics["loss"]) and "val_r1" in again.metrics
    assert again.val_r1_after == pytest.approx(first.val_r1_after)
    assert (again.val_r1_before, again.val_r1_after) == (first.val_r1_before, first.val_r1_after)

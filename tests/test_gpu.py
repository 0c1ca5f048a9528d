"""The CUDA-only paths: mixed precision, pinned host memory, NCCL. Marked ``gpu``: they run where
CUDA is present and skip cleanly elsewhere (``conftest.pytest_collection_modifyitems``)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from trackemb.config import TrainConfig
from trackemb.embedding.checkpoint import load_checkpoint
from trackemb.embedding.data import PairBatchDataset, held_out_split, load_index
from trackemb.embedding.model import encoder_from_args
from trackemb.embedding.monitor import ListWriter
from trackemb.embedding.sampler import train_sampler
from trackemb.embedding.train import train

REPO = Path(__file__).resolve().parents[1]
GPU_TESTS = ("test_amp_training_on_cuda", "test_pinned_memory_batches", "test_nccl_two_ranks")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from synth_store import build_synthetic_store

    return build_synthetic_store(tmp_path_factory.mktemp("gpu") / "store", n_videos=6, tracks_per_video=4)


def _cfg(**kw) -> TrainConfig:
    base = dict(arch="smallcnn", embed_dim=32, input_px=32, steps=6, batch_pairs=8, num_workers=0,
                val_every_steps=3, ckpt_every_steps=3, projector_max_patches=0, device="cuda")  # fmt: skip
    return TrainConfig(**(base | kw))


@pytest.mark.gpu
def test_amp_training_on_cuda(store, tmp_path):
    result = train(store, tmp_path / "run", _cfg(amp=True), writer=ListWriter())
    assert result.step == 6 and math.isfinite(result.metrics["loss"])
    ckpt = load_checkpoint(result.checkpoint)
    assert len(ckpt["rng"]["cuda"]) >= 1, "trained on CPU, not CUDA"
    # Mixed precision keeps float32 master weights; the autocast forward itself is half precision.
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
    model = encoder_from_args(ckpt["model_args"]).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert model.forward_features(torch.rand(2, 3, 32, 32, device="cuda")).dtype == torch.bfloat16


@pytest.mark.gpu
def test_pinned_memory_batches(store):
    cfg = _cfg()
    index = load_index(store)
    train_g, _ = held_out_split(index, cfg)
    sampler = train_sampler(index, train_g, cfg)
    loader = DataLoader(
        PairBatchDataset(store, index, cfg), sampler=sampler, batch_size=None, pin_memory=True
    )
    batch = next(iter(loader))
    assert batch["images"].is_pinned()
    assert batch["images"].to("cuda", non_blocking=True).is_cuda


@pytest.mark.gpu(devices=2)
def test_nccl_two_ranks(store, tmp_path):
    """torchrun with two CUDA ranks: setup_distributed joins an NCCL group and DDP trains."""
    config = tmp_path / "train.toml"
    config.write_text('[train]\narch = "smallcnn"\nembed_dim = 16\ninput_px = 32\nbatch_pairs = 8\n'
                      'num_workers = 0\nprojector_max_patches = 0\ndevice = "cuda"\n')  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "trackemb.embedding.train", "--store", str(store), "--run-dir", str(tmp_path / "run"),
           "--config", str(config), "--steps", "3"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "NCCL_DEBUG": "INFO"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NCCL" in proc.stdout + proc.stderr
    ckpt = load_checkpoint(tmp_path / "run" / "ckpt.pt")
    assert ckpt["sampler"]["world_size"] == 2 and np.isfinite(float(ckpt["metrics"]["loss"]))


def test_gpu_tests_skip_cleanly_without_cuda_and_run_with_it():
    """The marker is enforced: on a machine without CUDA every gpu test is skipped with its reason."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-m", "gpu", "-rs", "-q", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    if have == 0:
        assert f"{len(GPU_TESTS)} skipped" in out and "needs 1 CUDA device(s), found 0" in out, out[-3000:]
        assert "passed" not in out.splitlines()[-1]
    else:
        assert "2 passed" in out or "3 passed" in out, out[-3000:]

"""GPU training: samples/s, model FLOPs utilisation (MFU), and whether the loader keeps up.

Only with CUDA (the table says "skipped: no CUDA" otherwise). A training step is the
library's (``bench.common.make_train_step``: AMP forward, mining, triplet loss, backward,
optimizer) at the default config (resnet18, default input size and batch), plus a larger
batch to show the headroom. FLOPs per step come from ``torch.utils.flop_counter``; the
peak is the device's dense bf16 tensor throughput from :data:`PEAK_BF16`. The loader is
the training DataLoader over a real PatchStore; it keeps up when its batches/s exceed the
GPU's steps/s.

``run(quick=True, device="cpu")`` exercises the same code on CPU so the smoke test keeps it alive.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import BenchResult, interleave, med
from bench.inputs import build_patch_store, loader_seconds, make_loader, make_train_step
from trackemb.config import TrainConfig

# Dense (no sparsity) bf16 tensor-core FLOP/s from the vendors' datasheets; matched by
# substring of torch.cuda.get_device_name(), first match wins (so "H100 PCIe" precedes "H100").
PEAK_BF16: list[tuple[str, float]] = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 6000 Ada", 364e12),
    ("A6000", 155e12),
    ("V100", 125e12),  # no bf16: fp16 tensor-core peak (AMP falls back to fp16 there)
    ("T4", 65e12),  # likewise fp16
]


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak of a device by name, or None if it is not in :data:`PEAK_BF16`."""
    for key, flops in PEAK_BF16:
        if key.lower() in device_name.lower():
            return flops
    return None


def step_flops(step_fn: Any, batch: dict[str, Any]) -> int:
    """FLOPs of one full training step (forward and backward), counted by FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        step_fn(batch)
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _on_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    pin = device.type == "cuda"
    return {k: (v.pin_memory() if pin else v) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _measure(cfg: TrainConfig, device: torch.device, store: Path, steps: int, rounds: int) -> dict[str, Any]:
    step_fn, _ = make_train_step(cfg, device)
    pin = device.type == "cuda"
    loader, dataset, sampler = make_loader(store, cfg, cfg.num_workers, pin_memory=pin)
    # More workers where the machine has the cores: does the loader keep up once it is given them?
    more = min(8, (os.cpu_count() or 1) - 1)
    loader_more = make_loader(store, cfg, more, pin_memory=pin)[0] if more > cfg.num_workers else None
    batch = _on_device(dataset[sampler.batch_at(0)], device)
    for _ in range(3):  # cudnn autotuning, allocator warm-up
        step_fn(batch)
    flops = step_flops(step_fn, batch)

    def train() -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step_fn(batch)
        _sync(device)
        return time.perf_counter() - t0

    n_batches = max(4, steps // 2)
    cases = {"train": train, "loader": lambda: loader_seconds(loader, n_batches)}
    if loader_more is not None:
        cases["loader_more_workers"] = lambda: loader_seconds(loader_more, n_batches)
    samples = interleave(cases, rounds)
    step_s = med(samples["train"]) / steps
    loader_rates = {k: n_batches / med(v) for k, v in samples.items() if k != "train"}
    more_rate = loader_rates.get("loader_more_workers")
    return {
        "batch_images": int(batch["images"].shape[0]),
        "step_s": step_s,
        "samples_per_s": batch["images"].shape[0] / step_s,
        "flops_per_step": flops,
        "achieved_flops": flops / step_s,
        "loader_batches_per_s": loader_rates["loader"],
        "loader_vs_steps": loader_rates["loader"] * step_s,
        "more_workers": more if loader_more is not None else None,
        "loader_more_vs_steps": more_rate * step_s if more_rate is not None else None,
        "seconds": samples,
    }


def run(quick: bool, work: Path, device: str = "auto") -> BenchResult:
    """GPU training figures; skipped without CUDA unless ``device="cpu"`` is asked for (smoke test)."""
    res = BenchResult("gpu")
    if device == "auto":
        if not torch.cuda.is_available():
            res.skipped = "skipped: no CUDA"
            return res
        device = "cuda"
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    peak = peak_flops(name) if dev.type == "cuda" else None
    store = build_patch_store(work / "gpu_store", 256 if quick else 4000)
    base = TrainConfig(arch="smallcnn", batch_pairs=8, num_workers=1) if quick else TrainConfig()
    big = base.model_copy(update={"batch_pairs": 16 if quick else 256})
    steps, rounds = (2, 1) if quick else (20, 3)
    res.add("device", name, note=f"peak dense bf16 {peak / 1e12:.0f} TFLOP/s" if peak else "peak unknown")
    res.data = {"device": name, "peak_flops": peak, "runs": {}}
    for label, cfg in (("default batch", base), ("large batch", big)):
        m = _measure(cfg, dev, store, steps, rounds)
        mfu = m["achieved_flops"] / peak if peak else None
        what = f"{cfg.arch}, {m['batch_images']} images of {cfg.input_px}px, AMP {dev.type == 'cuda' and cfg.amp}"
        res.add(f"train samples/s ({label})", m["samples_per_s"], "samples/s", note=what)
        res.add(f"MFU ({label})", mfu, "fraction", note=f"{m['flops_per_step'] / 1e9:.1f} GFLOP/step")
        res.add(f"loader batches/s / steps/s ({label})", m["loader_vs_steps"], "ratio", 1.0,
                note=f"{cfg.num_workers} workers, {m['loader_batches_per_s']:.1f} batches/s")  # fmt: skip
        if m["more_workers"]:
            res.add(
                f"loader with {m['more_workers']} workers / steps/s ({label})",
                m["loader_more_vs_steps"],
                "ratio",
            )
        res.data["runs"][label] = m | {"config": cfg.model_dump(mode="json"), "mfu": mfu}
    return res

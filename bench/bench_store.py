"""Store reads: what the LMDB PatchStore adds on top of decoding JPEGs, and whether the loader keeps up.

1. Random-access patches/s from the store (``get_jpeg`` + ``decode_jpeg``, as the training
   dataset reads them) / patches/s decoding the same JPEG bytes already in memory.
   Target >= 0.8. The same files as an ImageFolder-style tree (one folder per video),
   read with ``open().read()`` + ``decode_jpeg`` and with torchvision's ``ImageFolder``
   (PIL), are reported beside it.
2. DataLoader batches/s (the training loader, default ``num_workers``) / CPU training
   steps/s at the default config. Target >= 3.

Also measured: lookups alone, one read transaction for a whole batch of lookups, and
torchvision's batched ``decode_jpeg`` (opportunities for the library).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from bench.common import BenchResult, interleave, med, rate, spread, timed
from bench.inputs import build_patch_store, loader_seconds, make_loader, make_train_step
from trackemb.config import TrainConfig
from trackemb.embedding.augment import aug_strength, augment_batch
from trackemb.storage import schema
from trackemb.storage.env import open_part
from trackemb.storage.store import open_reader

READ_TARGET = 0.8
LOADER_TARGET = 3.0


def _decode(blob: bytes) -> torch.Tensor:
    # The training dataset's decode: a writable copy, then libjpeg(-turbo) through torchvision.
    return decode_jpeg(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)


def _write_tree(root: Path, keys: list[str], jpegs: list[bytes]) -> list[Path]:
    """One folder per video (ImageFolder's class folders), one .jpg per patch."""
    shutil.rmtree(root, ignore_errors=True)
    paths = []
    for key, blob in zip(keys, jpegs, strict=True):
        video, rest = key.split("/", 1)
        path = root / video / (rest.replace("/", "_") + ".jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        paths.append(path)
    return paths


def _batched_get(store: Path, keys: list[str], batch: int, decode: bool = False) -> None:
    """Lookups in one read transaction per batch (a possible ``get_jpegs(keys)``), then optionally decoding them."""
    part = open_part("", store)  # shares this process's handle with the reader
    try:
        db = part.dbs[schema.JPEGS]
        for s in range(0, len(keys), batch):
            with part.read() as txn:
                blobs = [txn.get(schema.patch_db_key(key), db=db) for key in keys[s : s + batch]]
            if decode:
                for blob in blobs:
                    _decode(blob)
    finally:
        part.close()


def _read_rows(res: BenchResult, store: Path, work: Path, n: int, rounds: int) -> None:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import PILToTensor

    reader = open_reader(store)
    keys = sorted(p.key for p in reader.patches())
    jpegs = [reader.get_jpeg(k) for k in keys]
    order = np.random.default_rng(0).permutation(len(keys))[:n]
    rand_keys = [keys[i] for i in order]
    rand_blobs = [jpegs[i] for i in order]
    paths = _write_tree(work / "tree", keys, jpegs)
    rand_paths = [paths[i] for i in order]
    folder = ImageFolder(str(work / "tree"), transform=PILToTensor())
    pos = {p: i for i, (p, _) in enumerate(folder.samples)}
    rand_items = [pos[str(p)] for p in rand_paths]
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in rand_blobs]

    def store_decode() -> None:
        for key in rand_keys:
            _decode(reader.get_jpeg(key))

    def memory_decode() -> None:
        for blob in rand_blobs:
            _decode(blob)

    def folder_decode() -> None:
        for path in rand_paths:
            with open(path, "rb") as fh:
                _decode(fh.read())

    def imagefolder_pil() -> None:
        for i in rand_items:
            folder[i]

    def store_get() -> None:
        for key in rand_keys:
            reader.get_jpeg(key)

    def memory_decode_batched() -> None:
        for s in range(0, len(tensors), 64):
            decode_jpeg(tensors[s : s + 64], mode=ImageReadMode.RGB)

    def store_batch_decode() -> None:
        # What the training and embedding datasets do per batch: get_jpegs, then one decode_jpeg call.
        for s in range(0, len(rand_keys), 64):
            blobs = reader.get_jpegs(rand_keys[s : s + 64])
            decode_jpeg(
                [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs], mode=ImageReadMode.RGB
            )

    cases = {
        "store_decode": timed(store_decode),
        "memory_decode": timed(memory_decode),
        "folder_decode": timed(folder_decode),
        "imagefolder_pil": timed(imagefolder_pil),
        "store_get_only": timed(store_get),
        "store_get_one_txn_per_64": timed(lambda: _batched_get(store, rand_keys, 64)),
        "store_fetch_64_then_decode": timed(lambda: _batched_get(store, rand_keys, 64, decode=True)),
        "memory_decode_batched_64": timed(memory_decode_batched),
        "store_batch_decode_64": timed(store_batch_decode),
    }
    memory_decode()  # warm the decoder and the page cache of both the store and the tree
    store_decode()
    folder_decode()
    samples = interleave(cases, rounds)
    reader.close()
    pps = {k: rate(n, v) for k, v in samples.items()}
    mem = pps["memory_decode"]
    res.add("store read+decode", pps["store_decode"], "patches/s", note=f"{n} random reads of {len(keys)}")
    res.add("memory decode (limit)", mem, "patches/s", note="same JPEG bytes already in memory")
    res.add("store / memory, library batches", pps["store_batch_decode_64"] / pps["memory_decode_batched_64"],
            "ratio", READ_TARGET, note="get_jpegs(64) + decode_jpeg(list) / decode_jpeg(list) in memory")  # fmt: skip
    res.add("store / memory, one get_jpeg per patch", pps["store_decode"] / mem, "ratio")
    res.add("folder tree (open+read+decode_jpeg) / memory", pps["folder_decode"] / mem, "ratio",
            note=f"{pps['folder_decode']:.0f} patches/s")  # fmt: skip
    res.add("ImageFolder (PIL) / memory", pps["imagefolder_pil"] / mem, "ratio",
            note=f"{pps['imagefolder_pil']:.0f} patches/s")  # fmt: skip
    res.add("store lookups alone", pps["store_get_only"], "keys/s", note="get_jpeg, no decode")
    res.add("lookups, one txn per 64 / get_jpeg", pps["store_get_one_txn_per_64"] / pps["store_get_only"], "x",
            note="opportunity: a batched get_jpegs(keys)")  # fmt: skip
    res.add("store, fetch 64 then decode / memory", pps["store_fetch_64_then_decode"] / mem, "ratio",
            note="opportunity: fetch a batch's bytes before decoding")  # fmt: skip
    res.add("batched decode_jpeg(64) / one by one", pps["memory_decode_batched_64"] / mem, "x",
            note="opportunity: decode a batch in one call")  # fmt: skip
    jpeg_bytes = [len(b) for b in jpegs]
    res.data["reads"] = {
        "patches": len(keys), "reads": n, "rounds": rounds, "mean_jpeg_bytes": float(np.mean(jpeg_bytes)),
        "seconds": samples, "median_seconds": {k: med(v) for k, v in samples.items()},
        "spread": {k: spread(v) for k, v in samples.items()}, "patches_per_s": pps,
        "ratio_store_memory": pps["store_batch_decode_64"] / pps["memory_decode_batched_64"],
        "ratio_store_memory_per_key": pps["store_decode"] / mem,
    }  # fmt: skip


def _loader_rows(res: BenchResult, store: Path, quick: bool, rounds: int) -> None:
    cfg = TrainConfig(arch="smallcnn") if quick else TrainConfig()
    n_batches, n_steps = (4, 1) if quick else (24, 2)
    workers = cfg.num_workers
    loader, dataset, sampler = make_loader(store, cfg, workers)
    loader0, _, _ = make_loader(store, cfg, 0)
    step_fn, _ = make_train_step(cfg, torch.device("cpu"))
    batches = [dataset[sampler.batch_at(i)] for i in range(max(2, n_steps))]
    specs = [sampler.batch_at(i) for i in range(2)]

    def batch_jpegs(spec: object) -> list[torch.Tensor]:
        return dataset._decode_rows(spec.rows)  # the dataset's own batched read and decode

    decoded = [batch_jpegs(spec) for spec in specs[:2]]
    step_fn(batches[0])  # first step allocates optimizer state and warms the kernels

    def train_steps() -> float:
        t0 = time.perf_counter()
        for i in range(n_steps):
            step_fn(batches[i % len(batches)])
        return time.perf_counter() - t0

    def decode_only() -> float:
        t0 = time.perf_counter()
        for spec in specs[:2]:
            batch_jpegs(spec)
        return (time.perf_counter() - t0) / 2

    def augment_only() -> float:
        t0 = time.perf_counter()
        for i, imgs in enumerate(decoded):
            augment_batch(imgs, aug_strength(cfg.steps, cfg), cfg.input_px, i)
        return (time.perf_counter() - t0) / len(decoded)

    cases = {
        "train_step": train_steps,
        f"loader_{workers}_workers": lambda: loader_seconds(loader, n_batches),
        "loader_in_process": lambda: loader_seconds(loader0, n_batches),
        "batch_decode_part": decode_only,
        "batch_augment_part": augment_only,
    }
    samples = interleave(cases, rounds)
    step_rate = rate(n_steps, samples["train_step"])
    load_rate = rate(n_batches, samples[f"loader_{workers}_workers"])
    in_proc = rate(n_batches, samples["loader_in_process"])
    threads = torch.get_num_threads()
    res.add("CPU train step", step_rate, "steps/s",
            note=f"{cfg.arch}, {2 * cfg.batch_pairs} images of {cfg.input_px}px, torch threads {threads}")  # fmt: skip
    res.add(f"DataLoader ({workers} workers)", load_rate, "batches/s")
    res.add("DataLoader / train step", load_rate / step_rate, "ratio", LOADER_TARGET)
    res.add(
        "DataLoader in-process / train step", in_proc / step_rate, "ratio", note=f"{in_proc:.1f} batches/s"
    )
    per_batch = 1.0 / in_proc
    res.add("loader batch: JPEG decode share", med(samples["batch_decode_part"]) / per_batch, "share")
    res.add("loader batch: augmentation share", med(samples["batch_augment_part"]) / per_batch, "share")
    res.data["loader"] = {
        "config": cfg.model_dump(mode="json"), "batches": n_batches, "steps": n_steps, "rounds": rounds,
        "seconds": samples, "spread": {k: spread(v) for k, v in samples.items()}, "steps_per_s": step_rate,
        "batches_per_s": load_rate, "batches_per_s_in_process": in_proc, "ratio": load_rate / step_rate,
        "torch_threads": threads,
    }  # fmt: skip


def run(quick: bool, work: Path) -> BenchResult:
    """Store read rates and loader vs training step (quick: 256 patches, smallcnn, one round)."""
    res = BenchResult("store")
    n_patches, rounds = (256, 1) if quick else (4000, 5)
    store = build_patch_store(work / "patch_store", n_patches)
    _read_rows(res, store, work, n_patches, rounds)
    _loader_rows(res, store, quick, min(rounds, 3))
    return res

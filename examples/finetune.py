"""Fine-tune an exported trackemb encoder on a small labelled task (scikit-learn's digits).

Compares the exported (self-supervised) weights with the same network from random
init, two ways: a linear probe on frozen embeddings (logistic regression) and a full
fine-tune of encoder + linear head. Runs offline on CPU in about a minute or two:

    python examples/finetune.py runs/export            # default: 500 images, 2 epochs
    python examples/finetune.py runs/export --quick    # seconds; a smoke test

The 8x8 grey digits are upsampled to the encoder's input size and repeated to RGB,
which is all the preprocessing an export needs: the encoder normalises internally.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from torch import nn

import trackemb
from trackemb.embedding.model import encoder_from_args


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "export_dir", type=Path, help="Directory written by `trackemb export` (model_card.json ...)."
    )
    parser.add_argument("--epochs", type=int, default=2, help="Fine-tuning epochs per encoder.")
    parser.add_argument(
        "--train-images",
        type=int,
        default=500,
        help="Training images drawn from the split (0: the whole training split); keeps CPU runs short.",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="Fine-tuning batch size.")
    parser.add_argument("--lr", type=float, default=1e-3, help="Encoder learning rate (the head uses 10x).")
    parser.add_argument("--test-frac", type=float, default=0.25, help="Held-out fraction of the 1797 digits.")
    parser.add_argument("--seed", type=int, default=0, help="Split, init and shuffling seed.")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="300 train / 150 test images and 1 epoch: a smoke test in seconds.",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="Results JSON (default: EXPORT_DIR/finetune_digits.json)."
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="Where to train.")
    return parser


def digits_as_rgb(input_px: int) -> tuple[torch.Tensor, np.ndarray]:
    """Returns: images (N, 3, input_px, input_px) float in [0, 1], labels (N,) int."""
    digits = load_digits()
    grey = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # pixel values are 0..16
    big = F.interpolate(grey, size=(input_px, input_px), mode="bilinear", align_corners=False).clamp(0, 1)
    return big.expand(-1, 3, -1, -1).contiguous(), digits.target


class Classifier(nn.Module):
    """Encoder + linear head. The embedding is unit-length, so it is scaled before the head
    (a cosine classifier's temperature); otherwise the logits start too flat to train quickly."""

    def __init__(self, encoder: nn.Module, embed_dim: int, n_classes: int, scale: float = 16.0) -> None:
        super().__init__()
        self.encoder, self.head, self.scale = encoder, nn.Linear(embed_dim, n_classes), scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x) * self.scale)


@torch.no_grad()
def embed(encoder: nn.Module, images: torch.Tensor, device: torch.device, batch: int = 256) -> np.ndarray:
    encoder.eval()
    return torch.cat(
        [encoder(images[i : i + batch].to(device)).cpu() for i in range(0, len(images), batch)]
    ).numpy()


def linear_probe(encoder: nn.Module, data: dict, device: torch.device) -> float:
    probe = LogisticRegression(max_iter=2000, C=10.0)
    probe.fit(embed(encoder, data["x_train"], device), data["y_train"])
    return float(probe.score(embed(encoder, data["x_test"], device), data["y_test"]))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, device: torch.device, batch: int) -> None:
    """Recompute every BatchNorm's running mean/var as the exact average over ``images``.

    A short fine-tune moves the weights faster than the momentum-0.1 running averages follow,
    so after a few dozen steps they describe activations of weights that no longer exist and
    eval-mode accuracy collapses even though training converged. Args: images (N, 3, H, W).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
    model.train()
    for i in range(0, len(images), batch):
        if len(images[i : i + batch]) > 1:
            model(images[i : i + batch].to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def finetune(encoder: nn.Module, data: dict, args: argparse.Namespace, device: torch.device) -> float:
    embed_dim = int(embed(encoder, data["x_train"][:1], device).shape[1])
    model = Classifier(copy.deepcopy(encoder), embed_dim, 10).to(device)
    opt = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": args.lr},
            {"params": model.head.parameters(), "lr": args.lr * 10},
        ],
        weight_decay=1e-4,
    )
    x, y = data["x_train"], torch.from_numpy(data["y_train"]).long()
    gen = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(args.batch_size):
            if len(idx) < 2:
                continue  # BatchNorm cannot train on a batch of one
            loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    recalibrate_batchnorm(model, x, device, args.batch_size)
    with torch.no_grad():
        logits = torch.cat([model(b.to(device)).cpu() for b in data["x_test"].split(256)])
    return float((logits.argmax(1).numpy() == data["y_test"]).mean())


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    if args.quick:
        args.epochs = 1
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    start = time.perf_counter()

    pretrained = trackemb.load_encoder(str(args.export_dir))
    model_args = pretrained.model_args()
    torch.manual_seed(args.seed)
    random_init = encoder_from_args(model_args)

    images, labels = digits_as_rgb(int(model_args["input_px"]))
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=args.test_frac, random_state=args.seed, stratify=labels
    )
    n_train = 300 if args.quick else args.train_images or len(x_tr)
    # The split is stratified and shuffled, so a prefix keeps every class represented.
    x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    if args.quick:
        x_te, y_te = x_te[:150], y_te[:150]
    data = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}

    results = {}
    for name, encoder in (("pretrained", pretrained), ("random_init", random_init)):
        encoder.to(device)
        torch.manual_seed(args.seed)  # same head init and batch order for both encoders
        results[name] = {
            "linear_probe": linear_probe(encoder, data, device),
            "finetune": finetune(encoder, data, args, device),
        }

    print(
        f"digits: {len(x_tr)} train / {len(x_te)} test, {model_args['arch']} at {model_args['input_px']} px, "
        f"{args.epochs} epoch(s) on {device}"
    )
    print(f"{'init':<12} {'linear probe':>12} {'fine-tune':>10}")
    for name, r in results.items():
        print(f"{name:<12} {r['linear_probe']:>12.3f} {r['finetune']:>10.3f}")

    report = {
        "export_dir": str(args.export_dir),
        "architecture": model_args["arch"],
        "input_px": int(model_args["input_px"]),
        "train_images": len(x_tr),
        "test_images": len(x_te),
        "epochs": args.epochs,
        "quick": args.quick,
        "device": str(device),
        "results": results,
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = args.out or args.export_dir / "finetune_digits.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()

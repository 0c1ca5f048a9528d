"""Post-hoc studies of a dev run's checkpoints (README, Quality, round 3), scored on the dev sets only.

python -m bench.quality_posthoc interpolate runs/quality-dev/NAME STEP [--alphas 0.25 0.5 0.75]
python -m bench.quality_posthoc layers runs/quality-dev/NAME STEP        # STEP 0: the untrained network
python -m bench.quality_posthoc bn-stats runs/quality-dev/NAME STEP

- ``interpolate``: weights ``(1 - a) * untrained + a * trained`` (WiSE-FT style, BatchNorm
  statistics included);
- ``layers``: pooled layer2 / layer3 / layer4 features and their concatenations as the embedding;
- ``bn-stats``: the same weights with BatchNorm statistics re-estimated on a dev set's own
  patches: a diagnosis of how much the training scenes' statistics cost, not a method (it
  looks at the evaluation images).

Checkpoints are the ``ckpt_step<N>.pt`` files ``bench.quality_dev`` keeps. One JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.corpus import corpus_dir
from bench.quality_dev import SEEDS, dev_labelled, dev_real, scores
from bench.quality_sets import EvalSet
from trackemb.config import TrainConfig
from trackemb.embedding.model import Encoder, build_encoder, encoder_from_args


def _load(run: Path, step: int) -> Encoder:
    # the run's own settings, so step 0 is the untrained twin at the input size it trained at
    cfg = TrainConfig.model_validate_json((run / "config.json").read_text())
    torch.manual_seed(cfg.seed)  # the untrained network, built as training builds it
    model = build_encoder(cfg.arch, cfg.embed_dim, cfg.input_px, cfg.init_weights)
    if step:
        ckpt = torch.load(run / f"ckpt_step{step}.pt", map_location="cpu", weights_only=False)
        model = encoder_from_args(ckpt["model_args"])
        model.load_state_dict(ckpt["model"])
    return model.eval()


def _summary(
    variant: str, encode: Callable[[torch.Tensor], torch.Tensor], px: int, sets: list[EvalSet]
) -> None:
    out = scores(encode, px, sets)
    lab = [out[f"dev labelled s{s}"] for s in SEEDS]
    row = {
        "variant": variant,
        "real R@1": out["dev real"]["R@1"],
        "real MAP@R": out["dev real"]["MAP@R"],
        "labelled MAP@R": round(sum(x["MAP@R"] for x in lab) / len(lab), 4),
        "labelled cross-video R@1": round(sum(x["cross-video R@1"] for x in lab) / len(lab), 4),
    }
    print(json.dumps(row), flush=True)


def _pooled(model: Encoder, x: torch.Tensor, names: list[str]) -> torch.Tensor:
    net = model.backbone
    h = net.maxpool(net.relu(net.bn1(net.conv1((x - model.mean) / model.std))))
    pooled = {}
    for name in ("layer1", "layer2", "layer3", "layer4"):
        h = getattr(net, name)(h)
        pooled[name] = F.normalize(h.mean((2, 3)), dim=1)
    return torch.cat([pooled[n] for n in names], 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality_posthoc", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("study", choices=("interpolate", "layers", "bn-stats"))
    parser.add_argument("run", type=Path, help="a bench.quality_dev run directory")
    parser.add_argument("step", type=int, help="which ckpt_step<N>.pt (0: the untrained network)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    args = parser.parse_args(argv)
    root = corpus_dir()
    sets = [dev_real(root), *(dev_labelled(root, seed) for seed in SEEDS)]
    model = _load(args.run, args.step)
    if args.study == "interpolate":
        init, trained = _load(args.run, 0).state_dict(), model.state_dict()
        for a in args.alphas:
            mixed = {k: (1 - a) * init[k] + a * v if v.is_floating_point() else v for k, v in trained.items()}
            blend = _load(args.run, 0)
            blend.load_state_dict(mixed)
            _summary(f"alpha {a}", blend.eval().forward_features, model.input_px, sets)
    elif args.study == "layers":
        for names in (
            ["layer4"],
            ["layer3"],
            ["layer2"],
            ["layer3", "layer4"],
            ["layer2", "layer3", "layer4"],
        ):
            _summary("+".join(names), lambda x, names=names: _pooled(model, x, names), model.input_px, sets)
    else:
        from torchvision.io import decode_jpeg

        from trackemb.embedding.augment import to_input

        _summary("as trained", model.forward_features, model.input_px, sets)
        for s in sets[:2]:
            m = _load(args.run, args.step)
            norms = [n for n in m.modules() if isinstance(n, torch.nn.modules.batchnorm._BatchNorm)]
            for n in norms:
                n.reset_running_stats()
                n.momentum = None  # an exact average over the set
            m.train()
            with torch.no_grad():
                x = torch.cat([to_input(decode_jpeg(torch.frombuffer(bytearray(j), dtype=torch.uint8))[None], m.input_px)
                               for j in s.jpegs])  # fmt: skip
                for batch in x.split(128):
                    m.forward_features(batch)
            _summary(f"statistics re-estimated on {s.name}", m.eval().forward_features, m.input_px, sets)


if __name__ == "__main__":
    main()

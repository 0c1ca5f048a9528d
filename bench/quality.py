"""Quality benchmark: is the trained encoder better than where it started, on video it never saw?

python -m bench.quality evaluate runs/quality/export       # trained vs random init vs raw pixels
python -m bench.quality ablate --store S --configs a.toml b.toml --names a b

``evaluate`` scores an exported encoder, in one run and on the same patches, against the
untrained network of the same architecture (seeded like training, same embedding layer),
raw 16x16 RGB pixels and their PCA-128, on (a) the corpus's held-out real scenes (track
retrieval; a query's positives are patches of its own track at least 10 frames away, closer
ones are left out of the ranking) and (b) the labelled generated set (identity retrieval,
and cross-video R@1: positives are the same identity in *other* videos). Every metric comes
with a bootstrap 95 % interval over tracks / identities.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import corpus_dir, fetch, load_manifest
from bench.corpus_io import CorpusError
from bench.quality_metrics import exclude_near_frames, exclude_same_video, paired_delta, score
from bench.quality_sets import (
    MIN_GAP,
    EvalSet,
    default_random_init,
    embed_set,
    embedding_layer,
    encoders,
    labelled_set,
    pca_pixels,
    read_card,
    real_set,
)

SETS = ("real", "labelled")
METHODS = ("trained", "random_init", default_random_init(), "raw_pixels", "pixels_pca128")


def _excludes(s: EvalSet, kind: str) -> dict[str, np.ndarray | None]:
    if kind == "real":
        return {"": exclude_near_frames(s.labels, s.frames, MIN_GAP)}
    return {"": None, "cross-video ": exclude_same_video(s.labels, s.videos)}


def evaluate(
    export_dir: Path,
    *,
    root: Path | None = None,
    sets: tuple[str, ...] = SETS,
    seed: int = 0,
    n_boot: int = 1000,
    pca: bool = True,
    log=print,  # noqa: ANN001
) -> dict[str, Any]:
    """Score ``export_dir`` and its baselines on the requested sets (see the module docstring).

    Returns:
        ``{"export", "card", "sets": {name: {"patches", "groups", "info", "methods": {method:
        {metric: {"value", "ci", ...}}}}}}``.
    """
    card = read_card(export_dir)
    encs = encoders(export_dir, card)
    root = root or corpus_dir()
    clips = load_manifest()
    fetch(clips, root, log=lambda m: None)  # no-op when cached; makes the held-out folder exist
    result: dict[str, Any] = {
        "export": str(export_dir),
        "card": {
            "architecture": card["architecture"],
            "embedding_dim": card["embedding_dim"],
            "embedding_layer": embedding_layer(card),
            "input_px": int(card["input_size"][0]),
            "step": card.get("step"),
            "seed": (card.get("config") or {}).get("seed", 0),
        },
        "sets": {},
    }
    for kind in sets:
        t0 = time.perf_counter()
        s = real_set(root) if kind == "real" else labelled_set(root, clips, seed)
        log(f"[quality] {s.name}: {len(s.jpegs)} patches, {len(np.unique(s.labels))} groups")
        methods: dict[str, Any] = {}
        embs: dict[str, np.ndarray] = {}
        excl = _excludes(s, kind)
        for name, (encode, px) in encs.items():
            embs[name] = embed_set(encode, s.jpegs, px)
            if name == "raw_pixels" and pca:
                embs["pixels_pca128"] = pca_pixels(embs[name])
        for name, emb in embs.items():
            methods[name] = score(emb, s.labels, s.labels, excludes=excl, n_boot=n_boot, seed=seed)
        # trained minus each baseline, paired over the same resampled tracks / identities
        deltas = {
            name: paired_delta(
                embs["trained"], emb, s.labels, s.labels, excludes=excl, n_boot=n_boot, seed=seed
            )
            for name, emb in embs.items()
            if name != "trained"
        }
        result["sets"][s.name] = {
            "patches": len(s.jpegs),
            "groups": int(len(np.unique(s.labels))),
            "info": s.info,
            "methods": methods,
            "trained_minus": deltas,
        }
        log(f"[quality] {s.name} scored in {time.perf_counter() - t0:.0f} s")
    return result


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per (set, metric), one column per method, ``value [95 % CI]``."""
    methods = [m for m in METHODS if any(m in s["methods"] for s in result["sets"].values())]
    lines = ["| set | metric | " + " | ".join(methods) + " |", "|---|---|" + "---:|" * len(methods)]
    for set_name, s in result["sets"].items():
        for metric in s["methods"]["trained"]:
            cells = []
            for m in methods:
                v = s["methods"].get(m, {}).get(metric)
                cells.append("–" if v is None else f"{v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]")
            label = f"{set_name} ({s['patches']} patches, {s['groups']} groups)"
            lines.append(f"| {label} | {metric} | " + " | ".join(cells) + " |")
    deltas = [(n, s["trained_minus"]) for n, s in result["sets"].items() if s.get("trained_minus")]
    if deltas:
        base = [m for m in METHODS[1:] if any(m in d for _, d in deltas)]
        lines += [
            "",
            "Trained minus each baseline, paired bootstrap 95 % interval (above 0: trained is better):",
            "",
        ]
        lines += ["| set | metric | " + " | ".join(base) + " |", "|---|---|" + "---:|" * len(base)]
        for set_name, d in deltas:
            for metric in next(iter(d.values())):
                cells = []
                for m in base:
                    v = d.get(m, {}).get(metric)
                    cells.append(
                        "–" if v is None else f"{v['value']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]"
                    )
                lines.append(f"| {set_name} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="score an export against random init and raw pixels")
    ev.add_argument("export_dir", type=Path, help="a `trackemb export` directory (model_card.json, weights)")
    ev.add_argument("--corpus-dir", type=Path, default=None, help="corpus cache (default: see bench.corpus)")
    ev.add_argument("--sets", default=",".join(SETS), help="comma list of: real, labelled")
    ev.add_argument("--seed", type=int, default=0, help="labelled-set generator and bootstrap seed")
    ev.add_argument("--no-pca", action="store_true", help="skip the PCA-128 pixel baseline")
    ev.add_argument("--out", type=Path, default=None, help="JSON output (default EXPORT_DIR/quality.json)")
    rn = sub.add_parser("run", help="make quality: corpus, harvest, train, export, evaluate, print the table")
    rn.add_argument("--config", type=Path, default=None, help="trackemb TOML (default: built-in defaults)")
    rn.add_argument("--runs", type=Path, default=Path("runs/quality"), help="run dir: train/ and export/")
    ab = sub.add_parser("ablate", help="train + export + evaluate several configs on one store")
    ab.add_argument("--store", type=Path, required=True, help="training PatchStore (the corpus train store)")
    ab.add_argument("--configs", type=Path, nargs="+", required=True, help="trackemb TOML files")
    ab.add_argument("--names", nargs="+", required=True, help="one short name per config")
    ab.add_argument("--runs", type=Path, default=Path("runs/ablate"), help="one <name>-<hash>/ per config")
    ab.add_argument(
        "--results", type=Path, default=None, help="rows JSON (default bench/results/quality.json)"
    )
    ab.add_argument(
        "--rescore", action="store_true", help="evaluate configs that already have a row again (their export)"
    )
    for p in (ev, rn, ab):
        p.add_argument("--bootstrap", type=int, default=1000, help="resamples for R@1/MAP@R (NMI, rank: 100)")
    return parser


def _write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = table(result)
    out.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"\nwritten: {out}, {out.with_suffix('.md')}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "evaluate":
            sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
            if bad := [s for s in sets if s not in SETS]:
                parser.error(f"unknown set(s) {bad}; choose from {SETS}")
            result = evaluate(
                args.export_dir, root=args.corpus_dir, sets=sets, seed=args.seed,
                n_boot=args.bootstrap, pca=not args.no_pca,
            )  # fmt: skip
            _write(result, args.out or args.export_dir / "quality.json")
        elif args.command == "run":
            from bench.quality_runs import run

            result = run(args.config, args.runs, n_boot=args.bootstrap)
            _write(result, args.runs / "quality.json")
            print(
                f"training {result['train_seconds'] / 60:.1f} min, all {result['total_seconds'] / 60:.1f} min"
            )
        else:
            from bench.quality_runs import RESULTS, ablate, ablation_table

            results = args.results or RESULTS
            rows = ablate(
                args.store, args.configs, args.names, runs=args.runs, results=results, n_boot=args.bootstrap,
                rescore=args.rescore,
            )  # fmt: skip
            print(ablation_table(rows))
            print(f"\nwritten: {results}, {results.with_suffix('.md')}")
    except (CorpusError, OSError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

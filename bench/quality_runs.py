"""Train -> export -> evaluate pipelines of the quality benchmark: ``run`` (make quality) and ``ablate``.

Training and export go through the ``trackemb`` CLI, exactly as a user runs them; each step
is skipped when its output exists (``--resume`` training, a finished export), so an
interrupted run or ablation picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.corpus import corpus_dir, fetch, load_manifest
from bench.quality_sets import FLOOR_PX, default_random_init, harvest_folder

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "quality.json"
Log = Callable[[str], None]


def _config_args(config: Path | None) -> list[str]:
    return ["--config", str(config)] if config else []


def train_store(root: Path, config: Path | None = None, log: Log = print) -> Path:
    """The training scenes harvested into ``root/stores/train-<fingerprint>.lmdb``, keyed by the
    harvest config (the defaults, or ``config``'s ``[harvest]`` table), so a store harvested with
    other settings is never reused."""
    from trackemb.config import HarvestConfig, load_config

    cfg = load_config(HarvestConfig, config, section="harvest")
    store = root / "stores" / f"train-{cfg.fingerprint()}.lmdb"
    harvest_folder(root / "train", store, log, extra=_config_args(config))
    return store


def train_export(store: Path, run_dir: Path, config: Path | None, log: Log = print) -> tuple[Path, float]:
    """Train (resumable) then export into ``run_dir/{train,export}``.

    Calls the library functions the CLI calls, without the CLI's temporary Prefect server: on a
    2-core machine that server's own CPU use slowed training by a third.

    Returns:
        The export directory and the seconds spent training (0 when it was already done).
    """
    from trackemb.config import ExportConfig, TrainConfig, load_config
    from trackemb.embedding.export import export_encoder
    from trackemb.embedding.train import train
    from trackemb.storage.store import open_reader

    export = run_dir / "export"
    if (export / "model_card.json").is_file():
        log(f"[quality] {export} exists; not retraining")
        return export, 0.0
    tcfg = load_config(TrainConfig, config, section="train")
    ecfg = load_config(ExportConfig, config, section="export")
    t0 = time.perf_counter()
    log(f"[quality] training on {store} -> {run_dir / 'train'} ({config or 'default config'}) ...")
    result = train(store, run_dir / "train", tcfg, resume=True)
    seconds = time.perf_counter() - t0
    log(f"[quality] trained in {seconds / 60:.1f} min (best validation {result.best}); exporting -> {export}")
    with open_reader(store) as reader:
        summary = reader.stats()
    export_encoder(run_dir / "train", export, ecfg.model_copy(update={"onnx": False}), store_summary=summary)
    return export, seconds


def run(config: Path | None, runs: Path, *, n_boot: int = 1000, log: Log = print) -> dict[str, Any]:
    """``make quality``: corpus -> harvest the training scenes -> train -> export -> evaluate."""
    from bench.quality import evaluate

    t0 = time.perf_counter()
    root = corpus_dir()
    fetch(load_manifest(), root, log=log)
    store = train_store(root, config, log)
    log(f"[quality] training store ready after {(time.perf_counter() - t0) / 60:.1f} min: {store}")
    export, train_s = train_export(store, runs, config, log)
    result = evaluate(export, root=root, n_boot=n_boot, log=log)
    result["train_seconds"] = round(train_s, 1)
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def config_hash(config: Path, store: Path) -> str:
    """What an ablation row is keyed by: the config's bytes and the store it trains on."""
    return hashlib.sha256(config.read_bytes() + str(store.resolve()).encode()).hexdigest()[:12]


def ablate(
    store: Path,
    configs: list[Path],
    names: list[str],
    *,
    runs: Path,
    results: Path = RESULTS,
    n_boot: int = 1000,
    rescore: bool = False,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Train, export and evaluate each config on the same store; append one row per config to
    ``results`` (written after every config, so a stopped ablation resumes), skipping configs
    whose hash already has a row. ``rescore``: evaluate such a row's export again instead (after
    the evaluation changed), keeping its training time."""
    from bench.quality import evaluate

    if len(names) != len(configs):
        raise ValueError(f"{len(configs)} configs but {len(names)} names")
    results.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = json.loads(results.read_text())["rows"] if results.is_file() else []
    for config, name in zip(configs, names, strict=True):
        key = config_hash(config, store)
        done = [r for r in rows if r["config_hash"] == key]
        if done and rescore and Path(done[0]["export"]).is_dir():
            log(f"[ablate] {name}: done before ({key}); scoring its export again")
            done[0]["result"] = evaluate(Path(done[0]["export"]), n_boot=n_boot, log=log)
            _write_rows(rows, results)
            continue
        if done:
            log(f"[ablate] {name}: done before ({key}); skipped")
            continue
        log(f"[ablate] {name} ({config}, {key})")
        export, train_s = train_export(store, runs / f"{name}-{key}", config, log)
        result = evaluate(export, n_boot=n_boot, log=log)
        rows.append(
            {"name": name, "config": str(config), "config_hash": key, "config_text": config.read_text(),
             "store": str(store), "train_seconds": round(train_s, 1), "export": str(export),
             "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "result": result}
        )  # fmt: skip
        _write_rows(rows, results)
    return rows


def _write_rows(rows: list[dict[str, Any]], results: Path) -> None:
    results.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    results.with_suffix(".md").write_text(ablation_table(rows) + "\n")


# (set, metric) columns of the ablation table: the acceptance metrics.
COLUMNS = (
    ("held-out real scenes", "R@1"),
    ("held-out real scenes", "MAP@R"),
    ("held-out real scenes", "effective rank"),
    ("labelled generated", "MAP@R"),
    ("labelled generated", "cross-video R@1"),
    ("labelled generated", "effective rank"),
)


def _cell(sets: dict[str, Any], method: str, set_name: str, metric: str) -> str:
    m = sets.get(set_name, {}).get("methods", {}).get(method, {}).get(metric)
    return "–" if m is None else f"{m['value']:.3f} ({m['ci'][0]:.2f}–{m['ci'][1]:.2f})"


def _px(row: dict[str, Any]) -> int:
    """The export's input size (rows scored before the card copy carried it were all at 64 px)."""
    return int(row["result"]["card"].get("input_px", FLOOR_PX))


def ablation_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per config (trained encoder), then the baselines: raw pixels once, and the
    untrained network once per distinct (architecture, embedding layer, dim, seed) among the rows."""
    head = "| config | train min | " + " | ".join(f"{s.split()[0]} {m}" for s, m in COLUMNS) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(COLUMNS)]
    for r in rows:
        sets = r["result"]["sets"]
        cells = [_cell(sets, "trained", s, m) for s, m in COLUMNS]
        lines.append(f"| {r['name']} | {r['train_seconds'] / 60:.1f} | " + " | ".join(cells) + " |")
    twins: dict[str, tuple[str, dict[str, Any]]] = {}
    for r in rows:
        c = r["result"]["card"]
        twin = (
            f"{c['architecture']} {c['embedding_layer']} {c['embedding_dim']}-d, {{px}} px, seed {c['seed']}"
        )
        twins.setdefault(twin.format(px=_px(r)), ("random_init", r))
        if any(default_random_init() in s.get("methods", {}) for s in r["result"]["sets"].values()):
            twins.setdefault(twin.format(px=FLOOR_PX), (default_random_init(), r))
    baselines = [(f"random init ({k})", method, r) for k, (method, r) in twins.items()]
    if rows:
        baselines += [(m, m, rows[-1]) for m in ("raw_pixels", "pixels_pca128")]
    for label, method, r in baselines:
        cells = [_cell(r["result"]["sets"], method, s, m) for s, m in COLUMNS]
        lines.append(f"| *{label}* | – | " + " | ".join(cells) + " |")
    return "\n".join(lines + _delta_lines(rows))


def _delta_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Trained minus random init and minus raw pixels per config, paired bootstrap intervals
    (rows scored before paired intervals existed have none and are left out)."""
    per_query = [(s, m) for s, m in COLUMNS if m != "effective rank"]
    out = []
    for r in rows:
        sets = r["result"]["sets"]
        if not all("trained_minus" in sets.get(s, {}) for s, _ in per_query):
            continue
        scored = sets[per_query[0][0]]["trained_minus"]
        bases = [b for b in ("random_init", default_random_init(), "raw_pixels") if b in scored]
        for base in bases:
            cells = []
            for s, m in per_query:
                d = sets[s]["trained_minus"][base][m]
                cells.append(f"{d['value']:+.3f} ({d['ci'][0]:+.2f} to {d['ci'][1]:+.2f})")
            out.append(f"| {r['name']} | {base} | " + " | ".join(cells) + " |")
    if not out:
        return []
    head = "| config | minus | " + " | ".join(f"{s.split()[0]} {m}" for s, m in per_query) + " |"
    return ["", "Trained minus baseline, paired bootstrap 95 % interval over the same resampled tracks:", "",
            head, "|---|---|" + "---:|" * len(per_query), *out]  # fmt: skip

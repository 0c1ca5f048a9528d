"""The evaluation as people read it: ``evaluation.md`` and a one-page ``report.html``.

Both open with a verdict (does the trained encoder beat the baselines measured in the same
run?), define every metric in one line, name the held-out set by file, and show whatever
metric keys the evaluation holds. ``report.html`` is self-contained: the training curves,
a montage of positive pairs and the cluster montages are inlined as PNG data.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

DEFINITIONS = {
    "R@1": "share of query patches whose nearest other patch comes from the same track",
    "R@5": "share of query patches with a patch of their own track among their 5 nearest",
    "MAP@R": "mean average precision over the R nearest patches, R = how many other patches the track has",
    "NMI": "agreement of k-means clusters (one per track) with the tracks: 0 none, 1 perfect",
    "ctx_R@1": "R@1 with every patch's surroundings swapped for another track's: the object, not the scene",
    "ctx_MAP@R": "MAP@R with every patch's surroundings swapped for another track's",
    "rank": "effective rank of the embeddings (RankMe): how many dimensions carry information",
}
_COUNTS = {"queries", "classes"}
_TIE = 0.005  # R@1 differences below this are reported as a tie


def metric_keys(methods: dict[str, dict[str, Any]]) -> list[str]:
    """Numeric metrics present in every method, in first-seen order (counts excluded)."""
    first = next(iter(methods.values()), {})
    return [
        k for k, v in first.items()
        if k not in _COUNTS and isinstance(v, int | float) and all(k in m for m in methods.values())
    ]  # fmt: skip


def definition(key: str) -> str:
    if key in DEFINITIONS:
        return DEFINITIONS[key]
    return DEFINITIONS["rank"] if "rank" in key.lower() else "see evaluation.json"


def _fmt(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def verdict(report: dict[str, Any]) -> str:
    """One sentence: does the trained encoder beat each baseline on held-out R@1?"""
    methods = report["methods"]
    trained = methods.get("trained", {}).get("R@1")
    baselines = {k: m["R@1"] for k, m in methods.items() if k != "trained" and "R@1" in m}
    if trained is None or not baselines:
        return "Verdict: no baseline to compare with."
    vs = ", ".join(f"{name} {value:.3f}" for name, value in baselines.items())
    n = max(int(methods["trained"].get("queries", 0)), 1)
    noise = 1.96 * math.sqrt(max(trained * (1 - trained), 1e-6) / n)
    losing = [k for k, v in baselines.items() if trained < v - _TIE]
    tied = [k for k, v in baselines.items() if abs(trained - v) <= _TIE]
    band = f" (R@1 over {n} queries: ±{noise:.3f} is noise)"
    if losing:
        return (
            f"Verdict: the trained encoder does NOT beat {' and '.join(losing)} (R@1 {trained:.3f} vs {vs}); "
            f"training has not paid off yet: train longer, harvest more videos, or check the curves{band}."
        )
    if tied:
        return f"Verdict: the trained encoder is no better than {' and '.join(tied)} (R@1 {trained:.3f} vs {vs}){band}."
    return f"Verdict: the trained encoder beats every baseline (R@1 {trained:.3f} vs {vs}){band}."


def held_out_files(report: dict[str, Any]) -> list[str]:
    """The held-out videos by file name (their content hashes when the store cannot be read)."""
    shas = list(report.get("split", {}).get("videos", []))
    try:
        from trackemb.storage.store import open_reader

        with open_reader(report["store"]) as reader:
            names = {v.sha: Path(v.path).name for v in reader.videos()}
    except Exception:  # noqa: BLE001 - a moved store must not break the report
        names = {}
    return [names.get(s, s[:12]) for s in shas]


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def evaluation_markdown(report: dict[str, Any]) -> str:
    """The text of ``evaluation.md``."""
    keys = metric_keys(report["methods"])
    files = held_out_files(report)
    lines = [
        f"# Evaluation of `{report['run_dir']}`",
        "",
        f"**{verdict(report)}**",
        "",
        f"Held-out track retrieval on `{report['store']}` ({report['split']['mode']}): "
        f"{_plural(report['queries'], 'query patch', 'query patches')}, "
        f"{_plural(report['tracks'], 'track', 'tracks')}, {_plural(report['videos'], 'video', 'videos')}. A query's positives are the other patches of its own track.",
        "",
        f"Held-out set: {', '.join(f'`{f}`' for f in files) or '(none)'}.",
        "",
        "| encoder | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for name, values in report["methods"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(values[k]) for k in keys) + " |")
    lines += ["", "What the numbers mean:", ""]
    lines += [f"- **{k}**: {definition(k)}." for k in keys]
    lines += [
        "",
        f"Chance R@1 (random ranking): {report['chance_R@1']:.3f}. Baselines are measured in the same run "
        f"on the same patches: `random_init` is the same architecture before training (seed {report['seed']}), "
        "`raw_pixels` is the downsampled RGB patch, flattened and L2-normalised.",
        "",
    ]
    return "\n".join(lines)


def _img(path: Path, alt: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


_CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
.verdict{font-size:1.25em;font-weight:600;padding:.7em 1em;border-radius:6px;background:#eef6ee}
.verdict.bad{background:#fbeeee}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .7em}td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ccc}.grid{display:flex;flex-wrap:wrap;gap:1em}
.grid figure{flex:0 1 320px}figcaption{color:#555;font-size:.9em}code{background:#f3f3f3;padding:0 .2em}"""


def write_report(out_dir: str | Path, report: dict[str, Any], *, pairs: int = 8) -> Path:
    """Write ``out_dir/report.html`` (and ``training_curves.png``, ``pairs.png``) for an evaluation.

    Args:
        out_dir: the export directory (cluster montages, if any, are taken from it).
        report: what :func:`trackemb.embedding.evaluate.evaluate_run` returned.
        pairs: positive pairs in the inlined pair montage.
    """
    from trackemb.embedding.curves import write_curves
    from trackemb.storage.inspect import store_montage

    out = Path(out_dir)
    run_dir = Path(report["run_dir"])
    curves = write_curves(run_dir / "tb", out / "training_curves.png")
    pair_png = store_montage(report["store"], out / "pairs.png", n_pairs=pairs, seed=0)
    keys, v = metric_keys(report["methods"]), verdict(report)
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(f'<td class="n">{_fmt(m[k])}</td>' for k in keys)
        + "</tr>"
        for name, m in report["methods"].items()
    )
    defs = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(definition(k))}.</li>" for k in keys)
    files = ", ".join(f"<code>{html.escape(f)}</code>" for f in held_out_files(report)) or "(none)"
    parts = [
        f"<h1>trackemb report: <code>{html.escape(str(run_dir))}</code></h1>",
        f'<p class="verdict{" bad" if "NOT" in v else ""}" id="verdict">{html.escape(v)}</p>',
        f"<p>Held-out track retrieval ({html.escape(report['split']['mode'])}) on "
        f"<code>{html.escape(str(report['store']))}</code>: {report['queries']} query patches from "
        f"{report['tracks']} tracks. Held-out set: {files}. Chance R@1 is {report['chance_R@1']:.3f}.</p>",
        f"<table><tr><th>encoder</th>{''.join(f'<th>{html.escape(k)}</th>' for k in keys)}</tr>{rows}</table>",
        f"<ul>{defs}</ul>",
        "<h2>Training</h2>",
        _img(curves, "training curves", "loss, held-out R@1 and mined distances per logged step")
        if curves else "<p>No TensorBoard scalars in the run directory.</p>",
        "<h2>What the encoder learned from</h2>",
        _img(pair_png, "positive pairs", "random positive pairs: first | last patch of one tracked object"),
    ]  # fmt: skip
    summary = out / "clusters.json"
    if summary.is_file():
        clusters = json.loads(summary.read_text())["clusters"]
        figs = [
            _img(out / c["montage"], f"cluster {c['cluster']}", f"cluster {c['cluster']}: {c['size']} patches; "
                 + ", ".join(f"{f} {n}" for f, n in list(c["videos"].items())[:3]))
            for c in clusters if c.get("montage") and (out / c["montage"]).is_file()
        ]  # fmt: skip
        parts += ["<h2>Clusters of the embeddings</h2>", f'<div class="grid">{"".join(figs)}</div>']
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>trackemb report</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    path = out / "report.html"
    path.write_text(page)
    return path

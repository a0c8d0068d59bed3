"""One committed run summarized as a single self-contained HTML page.

The page holds the run's facts, rows per status with the top errors, the label
distribution, a score histogram, throughput and stage timings, where the time went (seconds
of work per stage, the model actors' busy share and what bound the run, from the run record),
a heatmap of the run's channel weights (``channel_stats`` means, layers x channels), the
channel drift and the label drift (top-1 label distribution and score histogram, from the run
records) against the previous committed run of the same model and weights, and, where the output
holds other (model, weights) than the run's, the models side by side (agreement, a confusion matrix
of the top labels, score histograms). Figures are matplotlib PNGs embedded as base64, so the page
needs nothing but itself.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

import duckdb
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analytics import agreement, views
from analytics.agreement import Agreement, ModelIdentity
from pipeline import record as records
from pipeline import storage
from pipeline.errors import UsageError
from pipeline.record import SCORE_BINS, STAGES, RunRecord
from pipeline.schema import STATUSES
from pipeline.tables import OutputLayout

__all__ = ["Report", "Section", "build", "render_html", "write"]

TOP_LABELS = 25
CONFUSION_LABELS = 10  # the confusion matrix's labels; the rest add up in one "other" row and column


@dataclass(frozen=True)
class Section:
    """A titled part of the page: a figure (PNG), a note and a table, each optional."""

    slug: str
    title: str
    png: bytes | None = None
    note: str = ""
    columns: tuple[str, ...] = ()
    rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    run: RunRecord
    previous_run_id: str | None
    sections: list[Section]

    @property
    def figures(self) -> list[Section]:
        return [s for s in self.sections if s.png is not None]


def build(output: str, *, run_id: str | None = None) -> Report:
    """Gather the figures and tables of one committed run of ``output``.

    Args:
        output: the output root (local path or fsspec URI).
        run_id: the run to report on; default the latest committed run.

    Raises:
        UsageError: ``output`` does not exist, has no committed run, or none called ``run_id``.
    """
    con = views.connect(output)
    try:
        committed = [r for r in records.load_all(OutputLayout.of(output).runs) if r.committed]
        run = _pick_run(committed, output, run_id)
        drift = _drift_rows(con, run.run_id)
        previous = drift[0].previous_run_id if drift else _previous_run(con, run)
        label_drift = _label_drift_row(con, run.run_id)
        against = next((r for r in committed if label_drift and r.run_id == label_drift.previous_run_id), None)
        sections = [
            _status_section(run),
            _labels_section(con, run),
            _scores_section(con, run),
            _throughput_section(con, run),
            _stages_section(run),
            _heatmap_section(con, run),
            _drift_section(run, previous, drift),
            _label_drift_section(run, against, label_drift),
        ]
        models = _models_section(con, run)
        if models is not None:
            sections.append(models)
    finally:
        con.close()
    return Report(run, previous, sections)


def write(output: str, out: str, *, run_id: str | None = None, png_dir: str | None = None) -> Report:
    """Build the report, write the HTML page to ``out`` and, with ``png_dir``, each figure as PNG.

    Example:
        >>> write("s3://labels/photos", "report.html", png_dir="figures")  # doctest: +SKIP
    """
    report = build(output, run_id=run_id)
    storage.write_bytes(out, render_html(report).encode())
    if png_dir:
        for number, section in enumerate(report.figures, start=1):
            if section.png is not None:
                storage.write_bytes(storage.join(png_dir, f"{number:02d}-{section.slug}.png"), section.png)
    return report


def _pick_run(committed: list[RunRecord], output: str, run_id: str | None) -> RunRecord:
    """``run_id``, or the last to commit (as the ``runs`` view orders them)."""
    by_id = {r.run_id: r for r in sorted(committed, key=lambda r: (r.finished_at or "", r.run_id))}
    if not by_id:
        raise UsageError(
            f"{storage.redact_uri(output)} has no committed run to report on "
            "(runs commit when they finish: see `ghostnet-pipeline run --help`)"
        )
    if run_id is None:
        return list(by_id.values())[-1]
    if run_id not in by_id:
        latest = ", ".join(list(by_id)[-3:])
        raise UsageError(f"no committed run {run_id!r} in {storage.redact_uri(output)} (latest: {latest})")
    return by_id[run_id]


def _committed_at(run: RunRecord) -> datetime | None:
    return datetime.fromisoformat(run.finished_at) if run.finished_at else None


def _previous_run(con: duckdb.DuckDBPyConnection, run: RunRecord) -> str | None:
    row = con.execute(
        "SELECT run_id FROM runs WHERE model = ? AND weights_sha256 = ? AND committed_at < ? "
        "AND run_id IN (SELECT run_id FROM channel_stats) ORDER BY committed_at DESC, run_id DESC LIMIT 1",
        [run.model, run.weights_sha256, _committed_at(run)],
    ).fetchone()
    return str(row[0]) if row else None


class LayerDrift(NamedTuple):
    """One row of the ``channel_drift`` view, of the reported run."""

    previous_run_id: str
    layer: str
    channels: int
    js_divergence: float | None
    cosine_distance: float | None
    shifted: bool | None


class LabelDrift(NamedTuple):
    """The reported run's row of the ``label_drift`` view."""

    previous_run_id: str
    label_js_divergence: float | None
    score_js_divergence: float | None


def _drift_rows(con: duckdb.DuckDBPyConnection, run_id: str) -> list[LayerDrift]:
    rows = con.execute(
        f"SELECT {', '.join(LayerDrift._fields)} FROM channel_drift WHERE run_id = ?", [run_id]
    ).fetchall()
    return sorted((LayerDrift(*row) for row in rows), key=lambda drift: _layer_order(drift.layer))


def _label_drift_row(con: duckdb.DuckDBPyConnection, run_id: str) -> LabelDrift | None:
    row = con.execute(f"SELECT {', '.join(LabelDrift._fields)} FROM label_drift WHERE run_id = ?",
                      [run_id]).fetchone()
    return LabelDrift(*row) if row else None


def _layer_order(layer: str) -> list[tuple[int, int, str]]:
    # blocks.10.0.se comes after blocks.9.0.se: network order, not text order.
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", layer)]


def _run_filter(run: RunRecord) -> tuple[str, list[object]]:
    # run_date first: DuckDB prunes the other partitions' files by their path.
    return "run_date = ? AND run_id = ?", [date.fromisoformat(run.run_date), run.run_id]


def _status_section(run: RunRecord) -> Section:
    counts = {s: run.rows_per_status[s] for s in STATUSES if run.rows_per_status.get(s)}
    fig, ax = _figure(height=max(1.6, 0.45 * len(counts) + 0.8))
    names = list(counts)[::-1]
    colors = ["#3a8d5d" if s == "ok" else "#c0504d" for s in names]
    bars = ax.barh(names, [counts[s] for s in names], color=colors)
    ax.bar_label(bars, padding=3)
    ax.set_xlabel("rows")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.12)
    errors = [(e["status"], e["count"], e["error"], e["uri"]) for e in run.top_errors]
    note = f"{run.rows} rows for {run.items} items." + ("" if errors else " No errors.")
    return Section("status", "Rows per status", _png(fig), note,
                   ("status", "rows", "error", "example") if errors else (), errors)


def _labels_section(con: duckdb.DuckDBPyConnection, run: RunRecord) -> Section:
    where, params = _run_filter(run)
    rows = con.execute(
        f"SELECT label, count(*) AS n FROM predictions WHERE {where} AND status = 'ok' "
        "GROUP BY label ORDER BY n DESC, label",
        params,
    ).fetchall()
    if not rows:
        return Section("labels", "Label distribution", note="No ok rows: nothing was labeled.")
    shown, rest = rows[:TOP_LABELS], sum(n for _, n in rows[TOP_LABELS:])
    if rest:
        shown.append((f"({len(rows) - TOP_LABELS} other labels)", rest))
    fig, ax = _figure(height=max(1.6, 0.32 * len(shown) + 0.8))
    bars = ax.barh([str(label) for label, _ in shown][::-1], [n for _, n in shown][::-1], color="#4f81bd")
    ax.bar_label(bars, padding=3)
    ax.set_xlabel("ok rows (top-1 label)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.12)
    return Section("labels", "Label distribution", _png(fig), f"Distinct top-1 labels: {len(rows)}.")


def _scores_section(con: duckdb.DuckDBPyConnection, run: RunRecord) -> Section:
    where, params = _run_filter(run)
    scores = np.array(
        [s for (s,) in con.execute(f"SELECT score FROM predictions WHERE {where} AND status = 'ok'",
                                   params).fetchall() if s is not None],
        dtype=np.float64,
    )
    if scores.size == 0:
        return Section("scores", "Top-1 score", note="No ok rows: no scores.")
    fig, ax = _figure()
    ax.hist(scores, bins=SCORE_BINS, range=(0.0, 1.0), color="#4f81bd", edgecolor="white")
    ax.set_xlabel("top-1 softmax probability")
    ax.set_ylabel("rows")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    note = (f"median {np.median(scores):.3f}, 10th percentile {np.percentile(scores, 10):.3f}, "
            f"n = {scores.size}.")
    return Section("scores", "Top-1 score histogram", _png(fig), note)


def _throughput_section(con: duckdb.DuckDBPyConnection, run: RunRecord) -> Section:
    history = con.execute(
        "SELECT run_id, items_per_s FROM runs WHERE model = ? AND weights_sha256 = ? "
        "ORDER BY committed_at, run_id",
        [run.model, run.weights_sha256],
    ).fetchall()
    stages = [(name, run.timings[name]) for name in views.TIMINGS if run.timings.get(name) is not None]
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    bars = left.barh([name.removesuffix("_s") for name, _ in stages][::-1], [v for _, v in stages][::-1],
                     color="#8064a2")
    left.bar_label(bars, labels=[f"{v:.2f} s" for _, v in stages][::-1], padding=3)
    left.set_xlabel("seconds")
    left.set_title("this run's stages", fontsize=10)
    left.margins(x=0.2)
    positions = np.arange(len(history))
    speeds = [v or 0.0 for _, v in history]
    right.plot(positions, speeds, marker="o", color="#4f81bd")
    current = [i for i, (rid, _) in enumerate(history) if rid == run.run_id]
    right.plot(current, [speeds[i] for i in current], marker="o", markersize=10, color="#c0504d",
               linestyle="")
    right.set_xticks(positions, [rid[-8:] for rid, _ in history], rotation=45, ha="right", fontsize=7)
    right.set_ylabel("items / s")
    right.set_ylim(bottom=0)
    right.set_title("runs of this model and weights (this run in red)", fontsize=10)
    inference_s = run.timings.get("inference_s")
    note = (f"{run.items} items in {inference_s:.1f} s of inference: {run.items_per_s:.1f} items/s."
            if inference_s is not None else "")
    return Section("throughput", "Throughput and timings", _png(fig), note)


def _stages_section(run: RunRecord) -> Section:
    title = "Where the time went"
    stages = [(stage, run.stage_seconds[stage]) for stage in STAGES if stage in run.stage_seconds]
    if not stages:
        return Section("stages", title, note="The run record has no stage breakdown.")
    fig, ax = _figure(height=max(1.6, 0.4 * len(stages) + 0.8))
    bars = ax.barh([name for name, _ in stages][::-1], [v for _, v in stages][::-1], color="#8064a2")
    ax.bar_label(bars, labels=[f"{v:.2f} s" for _, v in stages][::-1], padding=3)
    ax.set_xlabel("seconds of work, summed over the workers doing it")
    ax.margins(x=0.2)
    busy = "n/a" if run.model_busy is None else f"{run.model_busy:.1%}"
    note = (f"{run.model_actors} model actors, busy {busy} of the inference time; "
            f"bound by: {run.bound or 'n/a'}.")
    return Section("stages", title, _png(fig), note, ("stage", "seconds of work"),
                   [(name, f"{v:.3f}") for name, v in stages])


def _label_drift_section(run: RunRecord, previous: RunRecord | None, drift: LabelDrift | None) -> Section:
    title = "Label drift against the previous run"
    if not run.label_counts:
        return Section("label_drift", title, note="No ok rows: no label distribution to compare.")
    if previous is None or drift is None:
        return Section("label_drift", title, note=(
            f"No earlier committed run of {run.model} with weights {run.weights_sha256} has ok rows: "
            "nothing to compare with."))
    labels = sorted(set(run.label_counts) | set(previous.label_counts),
                    key=lambda label: (-run.label_counts.get(label, 0), -previous.label_counts.get(label, 0), label))
    fig = Figure(figsize=(10, max(3.2, 0.3 * min(len(labels), TOP_LABELS) + 1.0)), layout="constrained")
    left, right = fig.subplots(1, 2)
    _compare_bars(left, labels[:TOP_LABELS], [_shares(r.label_counts, labels) for r in (run, previous)])
    left.set_title("top-1 label, share of ok rows", fontsize=10)
    _compare_histograms(right, [_shares(r.score_histogram) for r in (run, previous)])
    right.set_title("top-1 score, share of ok rows", fontsize=10)
    note = (f"Against run {previous.run_id}: Jensen-Shannon divergence {_bits(drift.label_js_divergence)} between "
            f"the top-1 label distributions, {_bits(drift.score_js_divergence)} between the score histograms (over "
            f"{views.LABEL_SHIFT_BITS} bits the labels count as shifted).")
    rows = [(label, run.label_counts.get(label, 0), previous.label_counts.get(label, 0))
            for label in labels[:TOP_LABELS]]
    return Section("label_drift", title, _png(fig), note, ("label", "ok rows, this run", "ok rows, previous run"),
                   rows)


def _shares(counts: dict[str, int] | list[int], keys: Sequence[str] = ()) -> np.ndarray:
    values = np.array([counts.get(k, 0) for k in keys] if isinstance(counts, dict) else counts, dtype=np.float64)
    total = sum(counts.values()) if isinstance(counts, dict) else values.sum()
    return values / total if total else values


def _compare_bars(ax: Axes, labels: Sequence[str], shares: Sequence[np.ndarray]) -> None:
    positions = np.arange(len(labels))[::-1]
    for offset, values, color, name in ((-0.2, shares[0], "#c0504d", "this run"),
                                        (0.2, shares[1], "#4f81bd", "previous run")):
        ax.barh(positions + offset, values[:len(labels)], height=0.4, color=color, label=name)
    ax.set_yticks(positions, labels, fontsize=7)
    ax.legend(loc="lower right", fontsize=8)


def _compare_histograms(ax: Axes, shares: Sequence[np.ndarray],
                        names: tuple[str, str] = ("this run", "previous run")) -> None:
    for values, color, name in ((shares[0], "#c0504d", names[0]), (shares[1], "#4f81bd", names[1])):
        if not values.size:
            continue  # a record written before score histograms were recorded
        edges = np.linspace(0.0, 1.0, len(values) + 1)
        ax.stairs(values, edges, color=color, label=name, linewidth=1.5)
    ax.set_xlabel("top-1 softmax probability")
    ax.legend(loc="upper left", fontsize=8)


def _models_section(con: duckdb.DuckDBPyConnection, run: RunRecord) -> Section | None:
    """The run's (model, weights) against each other one of the output; None when there is no other."""
    found = agreement.identities(con)
    this = ModelIdentity(run.model, run.weights_sha256)
    others = [identity for identity in found if identity != this]
    if not others:
        return None
    title = "Models side by side"
    if this not in found:
        return Section("models", title, note=f"No rows of this run's model {this}: nothing to compare.")
    results = sorted((agreement.compare(con, this, other) for other in others), key=lambda r: (-r.rows, r.b))
    main = results[0]
    rows = [(f"{r.b.model}@{r.b.weights_sha256}", r.rows, _percent(r.top1_agreement), _overlap(r), r.rows_only_a,
             r.rows_only_b, r.rows_not_ok_a, r.rows_not_ok_b, r.rows_misaligned) for r in results]
    columns = ("other model (B)", "rows compared", "top-1 agreement", "top-k overlap", "rows of A only",
               "rows of B only", "not ok on A", "not ok on B", "windows not aligned")
    note = _agreement_note(main, len(results))
    if not main.rows:
        return Section("models", title, note=note, columns=columns, rows=rows)
    agreement.create_view(con, this, main.b)  # the pairs of the one plotted
    scores = con.execute(f"SELECT score_a, score_b FROM {agreement.PAIRS} WHERE outcome = 'compared'").fetchall()
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1.15, 1))
    _confusion_matrix(left, main)
    histograms = [np.histogram([s[side] for s in scores if s[side] is not None], bins=SCORE_BINS,
                               range=(0.0, 1.0))[0] for side in (0, 1)]
    _compare_histograms(right, [_shares(list(h)) for h in histograms], (f"A {main.a}", f"B {main.b}"))
    right.set_title("top-1 score of the compared rows, share", fontsize=10)
    return Section("models", title, _png(fig), note, columns, rows)


def _agreement_note(main: Agreement, compared_with: int) -> str:
    text = (f"A is this run's model {main.a}, B {'the other model' if compared_with == 1 else 'each other model'}; "
            "each item's latest labeling counts, and only rows ok on both sides compare. ")
    if not main.rows:
        return text + f"{main.a} and {main.b} have no ok row of the same item: nothing to compare."
    worst = ", ".join(f"{d.label_a} -> {d.label_b} ({d.rows})" for d in main.disagreements[:3])
    return text + (f"Against {main.b}: {main.rows} rows compared, top-1 agreement {_percent(main.top1_agreement)}, "
                   f"top-{main.k} overlap {_overlap(main)}; most frequent disagreements (A -> B): {worst or 'none'}. "
                   f"The matrix: rows are A's top-1 label, columns B's, colour the share of A's row.")


def _confusion_matrix(ax: Axes, result: Agreement) -> None:
    names = [label.label for label in result.labels[:CONFUSION_LABELS]]
    index = {name: i for i, name in enumerate(names)}
    other = len(names)
    grid = np.zeros((other + 1, other + 1), dtype=np.int64)
    for label in result.labels:
        grid[index.get(label.label, other), index.get(label.label, other)] += label.agreed
    for pair in result.disagreements:
        grid[index.get(pair.label_a, other), index.get(pair.label_b, other)] += pair.rows
    if grid[other].any() or grid[:, other].any():
        names.append("(other labels)")
    else:
        grid = grid[:other, :other]
    totals = grid.sum(axis=1, keepdims=True)
    shares = np.divide(grid, totals, out=np.zeros(grid.shape), where=totals > 0)
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), n in np.ndenumerate(grid):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.6 else "#222")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel(f"B {result.b}: top-1 label")
    ax.set_ylabel(f"A {result.a}: top-1 label")
    ax.set_title("compared rows", fontsize=10)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _overlap(result: Agreement) -> str:
    return "n/a" if result.topk_overlap is None else f"{result.topk_overlap:.3f} (k = {result.k})"


def _bits(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f} bits"


def _heatmap_section(con: duckdb.DuckDBPyConnection, run: RunRecord) -> Section:
    rows = con.execute("SELECT layer, channel, mean FROM channel_stats WHERE run_id = ?", [run.run_id]).fetchall()
    if not rows:
        return Section("channel_weights", "Channel weights",
                       note="No channel statistics: the run had no ok rows.")
    layers = sorted({layer for layer, _, _ in rows}, key=_layer_order)
    index = {layer: i for i, layer in enumerate(layers)}
    grid = np.full((len(layers), max(c for _, c, _ in rows) + 1), np.nan)
    for layer, channel, mean in rows:
        grid[index[layer], channel] = np.nan if mean is None else mean
    fig, ax = _figure(width=10, height=max(2.5, 0.28 * len(layers) + 1.2))
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", interpolation="nearest", cmap="viridis",
                      vmin=0.0, vmax=1.0)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_xlabel("channel (blank: the layer has fewer channels)")
    fig.colorbar(image, ax=ax, label="mean gate value")
    note = f"{len(layers)} layers, {len(rows)} channels in all, over {_ok_count(con, run)} ok rows."
    return Section("channel_weights", "Channel weights per layer (channel_stats mean)", _png(fig), note)


def _ok_count(con: duckdb.DuckDBPyConnection, run: RunRecord) -> int:
    row = con.execute("SELECT max(count) FROM channel_stats WHERE run_id = ?", [run.run_id]).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _drift_section(run: RunRecord, previous: str | None, drift: Sequence[LayerDrift]) -> Section:
    title = "Channel drift against the previous run"
    if previous is None or not drift:
        return Section("drift", title, note=(
            f"No earlier committed run of {run.model} with weights {run.weights_sha256} "
            "has channel statistics: nothing to compare with."
        ))
    layers = [d.layer for d in drift]
    js = np.array([np.nan if d.js_divergence is None else d.js_divergence for d in drift])
    colors = ["#c0504d" if d.shifted else "#4f81bd" for d in drift]
    fig, ax = _figure(width=10, height=3.6)
    ax.bar(range(len(layers)), np.nan_to_num(js), color=colors)
    ax.axhline(views.JS_SHIFT_BITS, color="#c0504d", linestyle="--", linewidth=1,
               label=f"shift threshold {views.JS_SHIFT_BITS} bits")
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("Jensen-Shannon divergence (bits)")
    ax.legend(loc="upper left", fontsize=8)
    shifted = sum(1 for d in drift if d.shifted)
    note = (f"Against run {previous}: {shifted} of {len(drift)} layers shifted "
            "(Jensen-Shannon divergence of the normalized channel means above "
            f"{views.JS_SHIFT_BITS} bits).")
    rows = [(d.layer, d.channels, _fmt(d.js_divergence), _fmt(d.cosine_distance), "yes" if d.shifted else "no")
            for d in drift]
    return Section("drift", title, _png(fig), note,
                   ("layer", "channels", "JS divergence (bits)", "cosine distance", "shifted"), rows)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def _figure(*, width: float = 8, height: float = 3.2) -> tuple[Figure, Axes]:
    # A bare Figure, not pyplot: no global state, no backend to select, nothing to close.
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def render_html(report: Report) -> str:
    """The page: inline CSS, figures as data: URIs, every value escaped."""
    run = report.run
    facts = [
        ("run", run.run_id),
        ("kind", run.kind),
        ("run date", run.run_date),
        ("committed at", _committed_at(run)),
        ("model", run.model),
        ("weights", f"{run.weights} (sha256 {run.weights_sha256})"),
        ("inputs", ", ".join(run.inputs)),
        ("items", f"{run.items} labeled of {run.items_listed} listed ({run.items_skipped} already labeled)"),
        ("rows", run.rows),
        ("previous run", report.previous_run_id or "none"),
    ]
    body = [f"<h1>Run {_e(run.run_id)}</h1>", _table(("", ""), facts, header=False)]
    for section in report.sections:
        body.append(f'<section id="{_e(section.slug)}"><h2>{_e(section.title)}</h2>')
        if section.png is not None:
            data = base64.b64encode(section.png).decode()
            body.append(f'<img alt="{_e(section.title)}" src="data:image/png;base64,{data}">')
        if section.note:
            body.append(f"<p>{_e(section.note)}</p>")
        if section.columns:
            body.append(_table(section.columns, section.rows))
        body.append("</section>")
    return _PAGE.format(title=_e(f"ghostnet-pipeline run {run.run_id}"), body="\n".join(body))


def _table(columns: Sequence[str], rows: Sequence[Sequence[object]], *, header: bool = True) -> str:
    head = "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _e(value: object) -> str:
    return html.escape(str(value))


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1040px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }}
th, td {{ text-align: left; padding: 0.2em 0.8em; border-bottom: 1px solid #eee; vertical-align: top; }}
td {{ overflow-wrap: anywhere; max-width: 40em; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""

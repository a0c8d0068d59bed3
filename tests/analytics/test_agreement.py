"""The model_agreement view on a hand-built output with known answers (docs/analytics.md, "Comparing models").

Two weights of ghostnet_100 (A and B) and a third identity (C) label a few images and audio clips;
the runs are committed through the pipeline's own commit path and read back through the Delta log.
Every figure below is worked out by hand from the rows in :func:`hand_built`.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from analytics import Output, views
from analytics.agreement import MODEL_AGREEMENT, Disagreement, LabelAgreement, ModelIdentity, pick
from pipeline.errors import UsageError
from pipeline.schema import PREDICTIONS
from tests.analytics import synthetic
from tests.analytics.test_query_cli import run_cli

A = ModelIdentity("ghostnet_100", "a1" * 32)
B = ModelIdentity("ghostnet_100", "b2" * 32)
C = ModelIdentity("ghostnet_050", "c3" * 32)
T0 = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)


def row(uri: str, labels: str | None, *, run_id: str, at: timedelta, status: str = "ok", etag: str = "e1",
        segment: int = 0, window: tuple[float, float] | None = None, identity: ModelIdentity = A) -> dict:
    """One prediction row; ``labels`` is the top-k, best first, as one space-separated string."""
    topk = labels.split() if labels else None
    return {
        "uri": f"s3://media/{uri}", "etag": etag, "size_bytes": 100, "segment": segment,
        "modality": "audio" if window or uri.endswith(".wav") else "image",
        "start_s": window[0] if window else None, "end_s": window[1] if window else None,
        "status": status, "error": None if status == "ok" else f"{status}: test",
        "label": topk[0] if topk else None, "score": 0.9 if topk else None,
        "topk_ids": list(range(len(topk))) if topk else None, "topk_labels": topk,
        "topk_scores": [0.9, 0.05, 0.01][: len(topk)] if topk else None,
        "model": identity.model, "weights_sha256": identity.weights_sha256, "run_id": run_id,
        "processed_at": T0 + at,
    }


def hand_built(root: str) -> None:
    """Runs of A (a first run and a --reprocess of two images an hour later), B in between, and C."""
    first, later, b = timedelta(0), timedelta(hours=1), timedelta(minutes=30)
    a_first = [
        row("img1.jpg", "cat dog ship", run_id="a-first", at=first),
        row("img2.jpg", "cat dog tree", run_id="a-first", at=first),
        row("img3.jpg", "dog ship tree", run_id="a-first", at=first),
        row("img4.jpg", "ship tree cat", run_id="a-first", at=first),
        row("img5.jpg", "tree cat dog", run_id="a-first", at=first),  # B never labels it
        row("img7.jpg", None, run_id="a-first", at=first, status="decode_error"),
        row("img8.jpg", "dog cat ship", run_id="a-first", at=first),
        row("img10.jpg", "tree ship dog", run_id="a-first", at=first),  # superseded by a-second
        row("img11.jpg", "cat dog ship", run_id="a-first", at=first),  # superseded by a failure
        # clip1: three windows; the last one written a second later, in another batch
        row("clip1.wav", "cat dog ship", run_id="a-first", at=first, segment=0, window=(0.0, 1.0)),
        row("clip1.wav", "cat ship tree", run_id="a-first", at=first, segment=1, window=(1.0, 2.0)),
        row("clip1.wav", "dog cat tree", run_id="a-first", at=first + timedelta(seconds=1), segment=2,
            window=(2.0, 3.0)),
        row("clip2.wav", None, run_id="a-first", at=first, status="decode_error"),  # one row for the clip
        row("clip3.wav", "cat dog ship", run_id="a-first", at=first, segment=0, window=(0.0, 1.0)),
        row("clip3.wav", "cat dog ship", run_id="a-first", at=first, segment=1, window=(1.0, 2.0)),
    ]
    a_second = [
        row("img10.jpg", "cat dog ship", run_id="a-second", at=later),
        row("img11.jpg", None, run_id="a-second", at=later, status="decode_error"),
    ]
    b_rows = [
        row("img1.jpg", "cat ship dog", run_id="b", at=b, identity=B),
        row("img2.jpg", "dog cat ship", run_id="b", at=b, identity=B),
        row("img3.jpg", "dog cat ship", run_id="b", at=b, identity=B),
        row("img4.jpg", "cat dog tree", run_id="b", at=b, identity=B),
        row("img6.jpg", "cat dog ship", run_id="b", at=b, identity=B),  # A never labels it
        row("img1.jpg", "cat dog ship", run_id="b", at=b, etag="e2", identity=B),  # img1 changed since A
        row("img7.jpg", "dog cat ship", run_id="b", at=b, identity=B),
        row("img8.jpg", None, run_id="b", at=b, status="model_error", identity=B),
        row("img10.jpg", "cat dog tree", run_id="b", at=b, identity=B),
        row("img11.jpg", "cat dog ship", run_id="b", at=b, identity=B),
        row("clip1.wav", "cat dog tree", run_id="b", at=b, segment=0, window=(0.0, 1.0), identity=B),
        row("clip1.wav", "dog cat ship", run_id="b", at=b, segment=1, window=(1.0, 2.0), identity=B),
        row("clip1.wav", "dog tree cat", run_id="b", at=b, segment=2, window=(2.0, 3.0), identity=B),
        row("clip2.wav", "ship cat dog", run_id="b", at=b, segment=0, window=(0.0, 1.0), identity=B),
        row("clip2.wav", "ship cat dog", run_id="b", at=b, segment=1, window=(1.0, 2.0), identity=B),
        row("clip3.wav", "cat dog ship", run_id="b", at=b, segment=0, window=(0.0, 2.0), identity=B),  # 2 s windows
    ]
    c_rows = [row("img1.jpg", "tree cat dog", run_id="c", at=b, identity=C)]
    runs = [("a-first", a_first, A, "2026-11-27", 0), ("b", b_rows, B, "2026-11-27", 30),
            ("a-second", a_second, A, "2026-11-28", 60), ("c", c_rows, C, "2026-11-28", 40)]
    for run_id, rows, who, run_date, minutes in runs:
        synthetic.commit_run(root, run_id, pa.Table.from_pylist(rows, schema=PREDICTIONS),
                             synthetic.channel_stats(run_id, {}, model=who.model, weights=who.weights_sha256),
                             minutes=minutes, run_date=run_date, model=who.model, weights=who.weights_sha256)


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("agreement") / "out")
    hand_built(root)
    return root


def test_figures_of_the_hand_built_case(output):
    """Compared (ok on both sides, latest labeling): img1, img2, img3, img4, img10 and clip1's three windows.
    Top-3 lists, so k falls from 5 to 3; overlaps 1, 2/3, 2/3, 2/3, 2/3 and 2/3, 2/3, 1."""
    result = Output(output).model_agreement("ghostnet_100@a1a1", "ghostnet_100@b2")

    assert (result.a, result.b) == (A, B)
    assert (result.rows, result.agreed, result.top1_agreement) == (8, 5, 5 / 8)
    assert result.k == 3 and result.topk_overlap == pytest.approx(6 / 8)
    assert result.rows_only_a == 1, "img5"
    assert result.rows_only_b == 2, "img6, and img1 as it is now (another etag)"
    assert result.rows_not_ok_a == 4, "img7, img11 (its latest labeling failed), clip2's two windows"
    assert result.rows_not_ok_b == 1, "img8"
    assert result.rows_misaligned == 2, "clip3: windows of 1 s against 2 s"
    assert result.labels == (LabelAgreement("cat", rows=6, rows_a=5, rows_b=4, agreed=3, top1_agreement=0.5),
                             LabelAgreement("dog", rows=4, rows_a=2, rows_b=4, agreed=2, top1_agreement=0.5),
                             LabelAgreement("ship", rows=1, rows_a=1, rows_b=0, agreed=0, top1_agreement=0.0))
    assert result.disagreements == (Disagreement("cat", "dog", rows=2, share=0.25),
                                    Disagreement("ship", "cat", rows=1, share=0.125))


def test_swapping_a_and_b_mirrors_the_figures(output):
    forward = Output(output).model_agreement(A, B)
    backward = Output(output).model_agreement(B, A)

    assert (backward.rows, backward.agreed, backward.topk_overlap) == (forward.rows, forward.agreed,
                                                                        forward.topk_overlap)
    assert (backward.rows_only_a, backward.rows_only_b) == (forward.rows_only_b, forward.rows_only_a)
    assert (backward.rows_not_ok_a, backward.rows_not_ok_b) == (forward.rows_not_ok_b, forward.rows_not_ok_a)
    assert [(d.label_a, d.label_b, d.rows) for d in backward.disagreements] == [("dog", "cat", 2), ("cat", "ship", 1)]


def test_the_latest_labeling_counts(output):
    """Without the --reprocess run of 2026-11-28, img10 compares A's earlier "tree" (a disagreement where
    the latest "cat" agreed) and img11 its earlier ok "cat" (an agreement where the latest failed):
    8 + 1 rows compared, 5 - 1 + 1 agreed, img11 no longer not ok on A."""
    before = Output(output).model_agreement(A, B, until="2026-11-27")

    assert (before.rows, before.agreed, before.rows_not_ok_a) == (9, 5, 3)
    assert ("tree", "cat", 1) in [(d.label_a, d.label_b, d.rows) for d in before.disagreements]


def test_nothing_in_common_is_null_not_nan(tmp_path):
    root = str(tmp_path / "out")
    for run_id, who, prefix in (("a", A, "s3://one"), ("b", B, "s3://two")):
        rows = synthetic.predictions(run_id, {"ok": 2}, model=who.model, weights=who.weights_sha256, prefix=prefix)
        synthetic.commit_run(root, run_id, rows, synthetic.channel_stats(run_id, {}), model=who.model,
                             weights=who.weights_sha256)

    result = Output(root).model_agreement()

    assert (result.rows, result.top1_agreement, result.topk_overlap, result.k) == (0, None, None, None)
    assert (result.rows_only_a, result.rows_only_b, result.labels, result.disagreements) == (2, 2, (), ())
    assert result.table.num_rows == 1 and result.to_pandas()["top1_agreement"].isna().all()


def test_the_view_is_one_long_form_table_with_nulls_where_not_applicable(output):
    result = views.query(output, "SELECT * FROM model_agreement ORDER BY kind, rows DESC, label_a, label_b",
                         model_a="ghostnet_100@a1", model_b="ghostnet_100@b2")
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]

    assert result.columns == MODEL_AGREEMENT.names
    assert [r["kind"] for r in rows] == ["disagreement"] * 2 + ["label"] * 3 + ["summary"]
    assert all((r["model_a"], r["weights_sha256_a"], r["model_b"], r["weights_sha256_b"]) ==
               (A.model, A.weights_sha256, B.model, B.weights_sha256) for r in rows)
    summary, label, disagreement = rows[-1], rows[2], rows[0]
    assert summary["label_a"] is None and summary["share"] is None and summary["rows_misaligned"] == 2
    assert label["topk_overlap"] is None and label["rows_only_a"] is None and label["label_a"] == label["label_b"]
    assert disagreement["top1_agreement"] is None and disagreement["agreed"] is None and disagreement["share"] == 0.25
    floats = [v for r in rows for v in r.values() if isinstance(v, float)]
    assert floats and not any(math.isnan(v) for v in floats)

    df = Output(output).model_agreement(A, B).to_pandas()
    assert df["top1_agreement"].isna().sum() == 2 and "nan" not in df["label_a"].astype(str).tolist()


def test_choosing_the_pair(output):
    found = [A, B, C]

    assert pick(found, "ghostnet_050", "ghostnet_100@b2") == (C, B)
    assert pick([A, B]) == (A, B) and pick([A, B], "ghostnet_100@b") == (B, A)
    assert pick(found, "ghostnet_050", ModelIdentity(A.model, A.weights_sha256)) == (C, A)
    with pytest.raises(UsageError, match=rf"holds 3 .*ghostnet_050@{C.weights_sha256}.*--model-a, --model-b"):
        pick(found)
    with pytest.raises(UsageError, match="holds 3"):
        pick(found, "ghostnet_050")
    with pytest.raises(UsageError, match=r"ghostnet_100 matches 2 .*add more of the weights digest"):
        pick(found, "ghostnet_100", "ghostnet_050")
    with pytest.raises(UsageError, match=r"no rows of ghostnet_130 in the output; it holds: ghostnet_100@a1.*c3"):
        pick(found, "ghostnet_130", "ghostnet_050")
    with pytest.raises(UsageError, match="both ghostnet_050@c3c3"):
        pick(found, "ghostnet_050", "ghostnet_050@c3")
    with pytest.raises(UsageError, match=r"holds 1 .* identity: ghostnet_100@a1"):
        pick([A])


def test_query_cli_names_the_pair_and_refuses_to_guess(capsys, output):
    sql = "SELECT kind, rows, agreed, top1_agreement, share FROM model_agreement WHERE kind <> 'label' ORDER BY rows"
    code, out, err = run_cli(capsys, output, sql, "--model-a", "ghostnet_100@b2", "--model-b", "ghostnet_100@a1",
                             "--format", "json")

    assert (code, err) == (0, "")
    assert json.loads(out) == [
        {"kind": "disagreement", "rows": 1, "agreed": None, "top1_agreement": None, "share": 0.125},
        {"kind": "disagreement", "rows": 2, "agreed": None, "top1_agreement": None, "share": 0.25},
        {"kind": "summary", "rows": 8, "agreed": 5, "top1_agreement": 0.625, "share": None}]

    code, out, err = run_cli(capsys, output, "SELECT count(*) FROM model_agreement")
    assert code == 2 and out == ""
    assert err.startswith("error: the output holds 3 (model, weights) identities: ") and err.count("\n") == 1
    assert all(f"{i.model}@{i.weights_sha256}" in err for i in (A, B, C))

    code, out, _ = run_cli(capsys, output, "SELECT count(*) AS runs FROM runs", "--format", "json")
    assert code == 0 and json.loads(out) == [{"runs": 4}], "other views need no pair"


def test_query_cli_defaults_to_the_only_two(capsys, tmp_path):
    root = str(tmp_path / "out")
    for run_id, who, seed in (("a", A, 1), ("b", B, 2)):
        rows = synthetic.predictions(run_id, {"ok": 5}, model=who.model, weights=who.weights_sha256, seed=seed)
        synthetic.commit_run(root, run_id, rows, synthetic.channel_stats(run_id, {}), model=who.model,
                             weights=who.weights_sha256)
    labels = {run_id: [r["label"] for r in synthetic.predictions(run_id, {"ok": 5}, seed=seed).to_pylist()]
              for run_id, seed in (("a", 1), ("b", 2))}

    code, out, _ = run_cli(capsys, root, "SELECT model_a, weights_sha256_a, agreed FROM model_agreement "
                           "WHERE kind = 'summary'", "--format", "json")

    agreed = sum(x == y for x, y in zip(labels["a"], labels["b"], strict=True))
    assert code == 0 and json.loads(out) == [{"model_a": A.model, "weights_sha256_a": A.weights_sha256,
                                              "agreed": agreed}]


def test_registered_in_the_cli():
    from jobs.cli import build_parser

    args = build_parser().parse_args(["query", "out", "SELECT 1", "--model-a", "m@1", "--model-b", "m@2"])

    assert (args.model_a, args.model_b) == ("m@1", "m@2")


def test_an_item_without_etag_or_size_is_still_one_item(tmp_path):
    """etag and size_bytes are nullable: two nulls are the same version of the object, not two items."""
    root = str(tmp_path / "out")
    for run_id, who in (("a", A), ("b", B)):
        rows = [{**row("img.jpg", "cat dog ship", run_id=run_id, at=timedelta(0), identity=who),
                 "etag": None, "size_bytes": None}]
        synthetic.commit_run(root, run_id, pa.Table.from_pylist(rows, schema=PREDICTIONS),
                             synthetic.channel_stats(run_id, {}), model=who.model, weights=who.weights_sha256)

    result = Output(root).model_agreement(A, B)

    assert (result.rows, result.agreed, result.rows_only_a, result.rows_only_b) == (1, 1, 0, 0)


def test_s3_output(bucket):
    """The same figures from an output on S3 (moto's server), through the query route and Output."""
    root = f"s3://{bucket}/labels"
    hand_built(root)

    summary = views.query(root, "SELECT rows, agreed, rows_only_b, rows_not_ok_a FROM model_agreement "
                          "WHERE kind = 'summary'", model_a="ghostnet_100@a1", model_b="ghostnet_100@b2")

    assert summary.rows == [(8, 5, 2, 4)]
    assert Output(root).model_agreement(A, B).top1_agreement == 5 / 8

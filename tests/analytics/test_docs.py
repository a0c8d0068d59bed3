"""docs/analytics.md: the generated schema is current, and its Python examples run."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.analytics import synthetic

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "analytics.md"
GENERATOR = ROOT / "tools" / "gen_schema_doc.py"
# Blocks fenced as exactly ```python run here; ```python s3 blocks need a real bucket and do not.
EXAMPLE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_schema_doc", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.subprocess
def test_schema_doc_is_current():
    done = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True,
                          timeout=120)

    assert done.returncode == 0, done.stderr


def test_a_stale_schema_doc_is_detected():
    generator = load_generator()
    text = DOC.read_text()
    stale = text.replace("| `label` |", "| `label_renamed` |")

    assert generator.updated(text) == text
    assert generator.updated(stale) == text != stale


@pytest.fixture
def docs_output(tmp_path, monkeypatch) -> Path:
    """The examples read ``out`` from the working directory: two committed runs of one model, each with
    its own weights, over the same items."""
    root = str(tmp_path / "out")
    layers = {"blocks.1.0.se": 4, "blocks.2.0.se": 6}
    for minute, run_id in enumerate(("first", "second")):
        weights = f"random-seed-{minute}"
        synthetic.commit_run(root, run_id,
                             synthetic.predictions(run_id, {"ok": 5, "decode_error": 1}, weights=weights, seed=minute),
                             synthetic.channel_stats(run_id, synthetic.gates(layers, minute), weights=weights),
                             minutes=minute, weights=weights)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def examples() -> list[str]:
    return EXAMPLE.findall(DOC.read_text())


def test_the_doc_has_runnable_examples_for_each_engine():
    code = "\n".join(examples())

    engines = ("from analytics import Output", "analytics.views", "import duckdb", "pyarrow.dataset",
               "import polars")
    for engine in engines:
        assert engine in code


# What each example must print about the fixture's two runs (5 ok and 1 decode_error rows each):
# the answer it promises, not just something.
EXPECTED = [
    # analytics.Output: pandas with nulls kept, Arrow, a DuckDB relation, the run records
    ("12 rows; 10 without an error", "2 [(datetime.date(2026, 11, 27), 12)]", "('first', 'committed', 6)"),
    ("ok", "10", "decode_error"),  # connect(): rows per status
    ("ok", "10", "decode_error", "2026-11-27"),  # DuckDB through deltalake
    ("10 ok rows", "dtype: int64"),  # pandas: the ok rows, counted per label
    ("first", "second", "blocks.1.0.se", "mean_gate"),  # Polars: mean gate per run and layer
    # model_agreement: the two weights over the same 5 ok items and 1 decode_error
    ("ghostnet_050@random-seed-0 vs ghostnet_050@random-seed-1: 5 rows compared", "top-4 overlap 1.00",
     "not ok on A: 1", "top1_agreement"),
]


@pytest.mark.parametrize("number", range(len(examples())))
def test_example_runs_and_prints_its_answer(docs_output, number):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(examples()[number], f"{DOC.name} example {number + 1}", "exec"), {})

    assert len(examples()) == len(EXPECTED), "every example has its expected answer here"
    for fragment in EXPECTED[number]:
        assert fragment in printed.getvalue(), (number, fragment, printed.getvalue())

"""``Predictor(compile=True)``: inductor's graph gives the eager model's predictions for every batch size
without recompiling, and an actor whose compile fails runs eager and says why.

The Predictor is called in-process (no Ray): the actor is this class. Compiling ghostnet_050 costs
about 10-30 s on a 2-core CPU when inductor's on-disk cache (``/tmp/torchinductor_$USER``) is warm, and
one to three minutes the first time on a fresh machine.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.model import ModelSpec
from pipeline.predict import Predictor
from pipeline.schema import DECODED, Status

pytestmark = pytest.mark.slow

SPEC = ModelSpec("ghostnet_050", "random", num_classes=10)
BATCH = 8


def decoded_batch(n: int, seed: int, failed: tuple[int, ...] = ()) -> pa.Table:
    """What the decode stage hands the actor: ``n`` rows of random 224x224 crops, some failed."""
    rng = np.random.default_rng(seed)
    status = [Status.DECODE_ERROR.value if i in failed else Status.OK.value for i in range(n)]
    pixels = rng.integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)
    return pa.table({
        "uri": [f"mem://{seed}/{i}.jpg" for i in range(n)],
        "etag": pa.nulls(n, pa.string()),
        "size_bytes": [1000] * n,
        "modality": ["image"] * n,
        "segment": [0] * n,
        "start_s": pa.nulls(n, pa.float32()),
        "end_s": pa.nulls(n, pa.float32()),
        "status": status,
        "error": ["broken" if s != "ok" else None for s in status],
        "encoding": [None if s != "ok" else "raw" for s in status],
        "encoded": [None if s != "ok" else pixels[i].tobytes() for i, s in enumerate(status)],
        "_shard": [0] * n,
        "_last": [True] * n,
        "_models": [1] * n,
        "_group": [0] * n,
    }, schema=DECODED)


def predictor(tmp_path, **kwargs) -> Predictor:
    """An actor of SPEC; eager torch unless ``kwargs`` say otherwise (``compile``, ``engine_name``)."""
    kwargs.setdefault("engine_name", "torch")
    return Predictor(SPEC, run_id="t", embeddings=True, torch_threads=2, batch_size=BATCH, **kwargs)


def assert_same_predictions(actual: pa.Table, expected: pa.Table) -> None:
    assert actual["status"].to_pylist() == expected["status"].to_pylist()
    assert actual["label"].to_pylist() == expected["label"].to_pylist()
    assert actual["topk_ids"].to_pylist() == expected["topk_ids"].to_pylist()
    for column in ("score", "topk_scores", "embedding"):
        a = np.asarray(pa.compute.list_flatten(actual[column]) if column != "score" else actual[column], float)
        e = np.asarray(pa.compute.list_flatten(expected[column]) if column != "score" else expected[column], float)
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5, err_msg=column)
    weights = [
        [(w["layer"], w["mean"], w["max"]) for w in row or []] for row in actual["channel_weights"].to_pylist()
    ]
    expected_weights = [
        [(w["layer"], w["mean"], w["max"]) for w in row or []] for row in expected["channel_weights"].to_pylist()
    ]
    assert [[w[0] for w in row] for row in weights] == [[w[0] for w in row] for row in expected_weights]
    np.testing.assert_allclose(
        np.asarray([w[1:] for row in weights for w in row], float),
        np.asarray([w[1:] for row in expected_weights for w in row], float),
        rtol=1e-4, atol=1e-5,
    )


@pytest.fixture(scope="module")
def eager(tmp_path_factory) -> Predictor:
    return predictor(tmp_path_factory.mktemp("eager"))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Predictor:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("ghostnet_pipeline")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        compiled = predictor(tmp_path_factory.mktemp("compiled"), compile=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert compiled._compiled is not None, "inductor should work here: a C++ compiler is installed"
    [cost] = [r.getMessage() for r in records if "torch.compile" in r.getMessage()]
    assert cost.startswith("torch.compile of ghostnet_050 for batches of 8 on cpu took ")
    return compiled


@pytest.mark.parametrize(
    "n,failed",
    [(BATCH, ()), (5, ()), (BATCH, (2, 6)), (2 * BATCH + 3, (0,)), (1, ())],
    ids=["full", "short", "failed-rows", "longer-than-the-graph", "one"],
)
def test_compiled_predictions_match_eager_without_recompiling(eager, compiled, n, failed):
    calls = []
    graph = compiled._compiled

    def counting(x):
        calls.append(len(x))
        return graph(x)

    compiled._compiled = counting
    try:
        # A guard failure (a new batch size, layout or dtype) raises instead of compiling again.
        with torch._dynamo.config.patch(error_on_recompile=True):
            actual = compiled(decoded_batch(n, seed=n, failed=failed))
    finally:
        compiled._compiled = graph
    expected = eager(decoded_batch(n, seed=n, failed=failed))

    assert_same_predictions(actual, expected)
    ok = n - len(failed)
    assert calls == ([BATCH] * -(-ok // BATCH) if ok > 1 else []), "every batch goes through the one graph"
    assert actual["status"].to_pylist().count("ok") == ok


def test_a_failed_compile_runs_eager_with_a_warning(eager, tmp_path, caplog, monkeypatch):
    # What inductor raises at the first call where no C++ compiler works. The real thing (cpp.cxx
    # patched to a missing compiler, caches off) gives the same warning but costs 40 s of tracing.
    from torch._inductor.exc import InvalidCxxCompiler

    def no_compiler(fn, **kwargs):
        def compiled(*args):
            raise InvalidCxxCompiler()

        return compiled

    monkeypatch.setattr(torch, "compile", no_compiler)
    with caplog.at_level(logging.INFO, logger="ghostnet_pipeline"):
        fallback = predictor(tmp_path, compile=True)

    assert fallback._compiled is None
    [record] = [r for r in caplog.records if r.name == "ghostnet_pipeline"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("torch.compile of ghostnet_050 failed after ")
    assert "running eager instead: InvalidCxxCompiler: No working C++ compiler found" in record.getMessage()
    batch = decoded_batch(BATCH, seed=99, failed=(3,))
    assert_same_predictions(fallback(batch), eager(batch))

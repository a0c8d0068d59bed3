"""``--engine onnx``: the actor's rows equal eager torch's, the export is made once per machine and
read from the local cache after, an export that fails leaves a working torch actor, and the flag
is checked before anything starts. The Predictor runs in-process (no Ray): the actor is this class."""

from __future__ import annotations

import logging

import pytest

import ghostnet.engines
from jobs import cli
from jobs._run_config import config_from_args
from pipeline.config import RunConfig
from pipeline.errors import UsageError
from tests.pipeline.test_compile import BATCH, assert_same_predictions, decoded_batch, predictor


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GHOSTNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    return predictor(tmp_path_factory.mktemp("eager"), engine_name="torch")


@pytest.mark.parametrize(("n", "failed"), [(BATCH, ()), (3, (1,)), (2 * BATCH + 1, ()), (1, ())])
def test_onnx_rows_equal_eager_rows(eager, cache, tmp_path, n, failed):
    onnx = predictor(tmp_path, engine_name="onnx")
    assert onnx.engine == "onnx" and onnx._compiled is not None

    batch = decoded_batch(n, seed=n, failed=failed)
    assert_same_predictions(onnx(batch), eager(batch))


def test_the_export_is_made_once_then_read_from_the_cache(cache, tmp_path, monkeypatch):
    exports = []
    real = ghostnet.engines.export_onnx
    monkeypatch.setattr(ghostnet.engines, "export_onnx", lambda *a, **k: exports.append(1) or real(*a, **k))

    first = predictor(tmp_path, engine_name="onnx")
    second = predictor(tmp_path, engine_name="onnx")

    assert len(exports) == 1 and len(list((cache / "onnx").glob("ghostnet_050-*.onnx"))) == 1
    batch = decoded_batch(BATCH, seed=5)
    assert_same_predictions(second(batch), first(batch))


def test_a_failed_export_runs_torch_with_a_warning(eager, cache, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("an operator this exporter does not know")

    monkeypatch.setattr(ghostnet.engines, "export_onnx", broken)
    with caplog.at_level(logging.INFO, logger="ghostnet_pipeline"):
        fallback = predictor(tmp_path, engine_name="onnx")

    assert fallback._compiled is None
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("the ONNX export of ghostnet_050 failed after ")
    assert "running torch instead: RuntimeError: an operator this exporter does not know" in warning
    batch = decoded_batch(BATCH, seed=9, failed=(2,))
    assert_same_predictions(fallback(batch), eager(batch))


def test_the_engine_flag_reaches_the_config_and_bad_values_are_usage_errors(capsys):
    args = cli.build_parser().parse_args(["run", "--input", "/in", "--output", "/out", "--model", "ghostnet_050",
                                          "--engine", "onnx"])
    assert config_from_args(args).engine == "onnx"
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["run", "--engine", "tensorrt"])
    assert exit_.value.code == 2 and "invalid choice: 'tensorrt'" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--compile is --engine compile; it cannot go with --engine onnx"):
        RunConfig(inputs=("/in",), output="/out", model="ghostnet_050", compile=True, engine="onnx")

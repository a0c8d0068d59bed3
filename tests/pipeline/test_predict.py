"""The model actor's failure rule (``Predictor`` in-process, no Ray): an item the model fails on alone
is that item's ``model_error``; the model failing on every item of a batch the same way is our bug,
and fails the run as an internal error instead of writing a model_error row per item.

The faults are injected into the torch model's forward (the `torch` engine, so the forward is the
module's); the Predictor around it is the real one."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.errors import InternalError
from pipeline.predict import Predictor
from tests.pipeline.test_compile import SPEC, decoded_batch


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(SPEC, run_id="t", torch_threads=1, batch_size=8, engine_name="torch")


def with_a_black_crop(batch: pa.Table, row: int) -> pa.Table:
    encoded = batch["encoded"].to_pylist()
    encoded[row] = np.zeros((224, 224, 3), np.uint8).tobytes()
    return batch.set_column(batch.schema.get_field_index("encoded"), "encoded", pa.array(encoded, pa.binary()))


def test_an_item_the_model_fails_on_alone_is_its_model_error(predictor, monkeypatch):
    """docs/reliability.md "one bad item never takes its batch down": the batch is retried item by
    item; the item that fails gets model_error with its error, the others their labels."""
    forward = predictor.model.forward_all

    def fails_on_flat_images(x: torch.Tensor, **kwargs):
        if bool((x.flatten(2).std(dim=2).amax(dim=1) == 0).any()):
            raise RuntimeError("cannot run on a flat image")
        return forward(x, **kwargs)

    monkeypatch.setattr(predictor.model, "forward_all", fails_on_flat_images)

    rows = predictor(with_a_black_crop(decoded_batch(4, seed=1), row=2))

    assert rows["status"].to_pylist() == ["ok", "ok", "model_error", "ok"]
    assert rows["error"].to_pylist() == [None, None, "RuntimeError: cannot run on a flat image", None]
    assert [label is None for label in rows["label"].to_pylist()] == [False, False, True, False]


def test_the_model_failing_on_every_item_the_same_way_is_an_internal_error(predictor, monkeypatch):
    """#17 "internal failures are never reported as bad input": no row per item; the run stops
    with an error that says it is ours."""
    def always_fails(x: torch.Tensor, **kwargs):
        raise TypeError("forward_all() got an unexpected keyword argument")

    monkeypatch.setattr(predictor.model, "forward_all", always_fails)

    with pytest.raises(InternalError, match="all 4 items of a batch with the same error, TypeError"):
        predictor(decoded_batch(4, seed=2))

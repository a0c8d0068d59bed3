"""ONNX Runtime runs the exported `forward_all` with the eager model's outputs (fp32 parity, the
target of #25: max abs logit difference <= 1e-3), for any batch size, with every channel weight."""

from __future__ import annotations

import pytest
import torch

import ghostnet
from ghostnet.engines import OnnxEngine, export_onnx

TOLERANCE = 1e-3


@pytest.fixture(scope="module", params=["ghostnet_050", "ghostnetv2_100"])
def model(request) -> ghostnet.GhostNet:
    model = ghostnet.create_model(request.param, num_classes=100)
    ghostnet.init_random(model, 3)
    return ghostnet.for_inference(model).to(memory_format=torch.channels_last)


@pytest.fixture(scope="module")
def engine(model) -> OnnxEngine:
    return OnnxEngine(export_onnx(model, torch.zeros(4, 3, 224, 224)), threads=1, embeddings=True)


@pytest.mark.parametrize("batch", [1, 4, 7])
def test_onnx_outputs_equal_eager_forward_all(model, engine, batch):
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch)) * 2
    with torch.inference_mode():
        expected = model.forward_all(x.contiguous(memory_format=torch.channels_last), embeddings=True)
    actual = engine(x)

    assert (actual.logits - expected.logits).abs().max() <= TOLERANCE
    assert (actual.embedding - expected.embedding).abs().max() <= TOLERANCE
    assert list(actual.channel_weights) == list(expected.channel_weights) == ghostnet.channel_weight_names(model)
    for name, gates in expected.channel_weights.items():
        assert actual.channel_weights[name].shape == gates.shape
        assert (actual.channel_weights[name] - gates).abs().max() <= TOLERANCE, name
    assert torch.equal(actual.logits.argmax(1), expected.logits.argmax(1))


def test_without_embeddings_the_engine_returns_none(model, engine):
    quiet = OnnxEngine(engine.graph, threads=1, embeddings=False)
    assert quiet(torch.zeros(2, 3, 224, 224)).embedding is None

"""Channel weights: names, ranges, one forward pass, stability across fusion, channels_last and autocast."""

from __future__ import annotations

import copy

import pytest
import torch

from ghostnet import (
    GhostNet,
    capture_channel_weights,
    channel_weight_names,
    create_model,
    for_inference,
)

from .helpers import assert_close, randomize

SE_BLOCKS = ["3.0", "4.0", "6.3", "6.4", "7.0", "8.1", "8.3"]
DFC_BLOCKS = [
    "2.0",
    "3.0",
    "4.0",
    "5.0",
    "6.0",
    "6.1",
    "6.2",
    "6.3",
    "6.4",
    "7.0",
    "8.0",
    "8.1",
    "8.2",
    "8.3",
]
SE_NAMES = [f"blocks.{b}.se" for b in SE_BLOCKS]
DFC_NAMES = [f"blocks.{b}.ghost1.dfc" for b in DFC_BLOCKS]


def _model(name: str) -> GhostNet:
    torch.manual_seed(0)
    return randomize(create_model(name), seed=1).eval()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ghostnet_100", SE_NAMES),
        ("ghostnetv2_100", SE_NAMES + DFC_NAMES),
        ("ghostnetv3_050", SE_NAMES + DFC_NAMES),
    ],
)
def test_names_are_stable_across_fusion(name: str, expected: list[str]) -> None:
    model = _model(name)
    before = channel_weight_names(model)
    assert sorted(before) == sorted(expected)
    assert channel_weight_names(for_inference(model)) == before


@pytest.mark.parametrize("name", ["ghostnet_100", "ghostnetv2_100", "ghostnetv3_050"])
def test_values_match_before_and_after_fusion(name: str) -> None:
    model = _model(name)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        with capture_channel_weights(model) as before:
            logits = model(x)
        fused = for_inference(copy.deepcopy(model))
        with capture_channel_weights(fused) as after:
            fused_logits = fused(x)
    assert_close(fused_logits, logits)
    assert before.keys() == after.keys()
    for key, gate in before.items():
        assert gate.dtype == torch.float32 and gate.shape[0] == 2
        assert 0.0 <= gate.min().item() and gate.max().item() <= 1.0, key
        assert_close(after[key], gate)


def test_se_gate_width_is_the_expanded_channel_count() -> None:
    model = _model("ghostnet_100")
    with torch.inference_mode(), capture_channel_weights(model) as weights:
        model(torch.randn(1, 3, 64, 64))
    assert weights["blocks.3.0.se"].shape == (1, 72)
    assert weights["blocks.8.3.se"].shape == (1, 960)


def test_forward_all_uses_a_single_forward_pass() -> None:
    model = for_inference(_model("ghostnetv2_100"))
    calls = []
    model.conv_stem.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 64, 80)
    with torch.inference_mode():
        out = model.forward_all(x, embeddings=True)
        assert len(calls) == 1
        assert_close(out.logits, model(x))
    assert out.embedding is not None and out.embedding.shape == (2, 1280)
    assert len(out.channel_weights) == 21
    assert model.forward_all(x, embeddings=False).embedding is None


def test_hooks_are_removed_after_capture() -> None:
    """ghostnet/channel_weights.py, capture_channel_weights: hooks on every gate during the block, none after."""
    model = _model("ghostnetv2_100")

    def hooked() -> int:
        return sum(bool(module._forward_hooks) for module in model.modules())

    assert hooked() == 0
    with capture_channel_weights(model):
        assert hooked() == len(channel_weight_names(model)) == len(SE_NAMES + DFC_NAMES)
    assert hooked() == 0


# Largest |logit difference| / logit scale measured on 5 inputs: bf16 0.006, fp16 0.0006 (3x margin here).
AUTOCAST_TOLERANCE = {torch.bfloat16: 0.02, torch.float16: 0.002}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_channels_last_and_autocast(dtype: torch.dtype) -> None:
    """README, GPUs: fp16/bf16 autocast on channels_last gives the float32 logits (to the dtype's
    precision), the same top-1 and the same channel weights, still float32."""
    model = for_inference(_model("ghostnetv2_100")).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = model.forward_all(x, embeddings=True)
        with torch.autocast("cpu", dtype=dtype):
            low = model.forward_all(x, embeddings=True)
    assert low.logits.dtype == dtype
    assert_close(low.logits, reference.logits, rel=AUTOCAST_TOLERANCE[dtype])
    assert_close(low.embedding, reference.embedding, rel=AUTOCAST_TOLERANCE[dtype])
    assert torch.equal(low.logits.argmax(1), reference.logits.argmax(1))
    assert low.channel_weights.keys() == reference.channel_weights.keys()
    for key, gate in low.channel_weights.items():
        assert gate.dtype == torch.float32
        assert (gate - reference.channel_weights[key]).abs().max().item() < 0.05, key

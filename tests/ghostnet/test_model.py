"""Architecture parity with timm (state_dict, outputs, fused outputs), parameter counts, input checks."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.utils.model import reparameterize_model

from ghostnet import GhostNet, checkpoint_filter_fn, create_model, for_inference, list_models, reparameterize
from ghostnet.weights import load_state_dict_strict

from .helpers import assert_close, randomize

# Reference §5.1, measured column (millions, 3 decimals); v3 in fused (re-parameterised) form.
PAPER_PARAMS_M = {
    "ghostnet_050": 2.587,
    "ghostnet_100": 5.183,
    "ghostnet_130": 7.359,
    "ghostnetv2_100": 6.157,
    "ghostnetv2_130": 8.960,
    "ghostnetv2_160": 12.393,
    "ghostnetv3_050": 2.853,
    "ghostnetv3_100": 6.148,
    "ghostnetv3_130": 8.948,
    "ghostnetv3_160": 12.378,
}
INPUT_SIZES = ((224, 224), (193, 257))


def test_registry_lists_all_ten_variants() -> None:
    assert list_models() == sorted(PAPER_PARAMS_M)
    assert list_models("ghostnetv2_*") == ["ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160"]


@pytest.mark.parametrize("name", list_models())
def test_outputs_match_timm_before_and_after_fusion(name: str) -> None:
    torch.manual_seed(0)
    reference = randomize(timm.create_model(name, pretrained=False), seed=0).eval()
    ours = create_model(name)
    load_state_dict_strict(ours, checkpoint_filter_fn(reference.state_dict()), source="timm")
    ours.eval()
    inputs = [torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h)) for h, w in INPUT_SIZES]
    with torch.inference_mode():
        expected = [reference(x) for x in inputs]
        for x, want in zip(inputs, expected, strict=True):
            assert_close(ours(x), want, rel=1e-5)
        for_inference(ours)
        fused = [ours(x) for x in inputs]
        for got, want in zip(fused, expected, strict=True):
            assert_close(got, want)
        if ours.version == "v3":
            timm_fused = reparameterize_model(reference)
            for x, got in zip(inputs, fused, strict=True):
                assert_close(got, timm_fused(x))


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_matches_paper_table(name: str) -> None:
    model = create_model(name)
    if model.version == "v3":
        reparameterize(model)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 3) == PAPER_PARAMS_M[name]


def test_state_dict_keys_and_shapes_equal_timm_for_v3_training_form() -> None:
    ours = create_model("ghostnetv3_050").state_dict()
    theirs = timm.create_model("ghostnetv3_050", pretrained=False).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("name", ["ghostnetv2_100", "ghostnetv3_050"])
def test_dfc_models_reject_inputs_below_33_px(name: str) -> None:
    model = create_model(name).eval()
    with pytest.raises(ValueError, match=">= 33"):
        model(torch.zeros(1, 3, 32, 64))
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 33, 40)).shape == (1, 1000)


def test_v1_accepts_tiny_inputs() -> None:
    with torch.inference_mode():
        assert create_model("ghostnet_050").eval()(torch.zeros(1, 3, 16, 16)).shape == (1, 1000)


def test_wrong_channel_count_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        create_model("ghostnet_050", in_chans=1)(torch.zeros(1, 3, 64, 64))


def test_head_returns_1280_pre_logits_and_custom_classes() -> None:
    model = create_model("ghostnet_050", num_classes=7, in_chans=1).eval()
    with torch.inference_mode():
        features = model.forward_features(torch.zeros(2, 1, 64, 96))
        assert features.shape == (2, 480, 2, 3)
        assert model.forward_head(features, pre_logits=True).shape == (2, 1280)
        assert model.forward_head(features).shape == (2, 7)
    assert model.meta is not None and model.meta.labels == tuple(map(str, range(7)))
    assert model.meta.input_size == (1, 224, 224)


def test_unknown_model_name_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match="did you mean ghostnetv2_100"):
        create_model("ghostnetv2-100")


@pytest.mark.parametrize("num_classes", [0, -1])
def test_a_head_of_no_classes_is_refused_not_made_imagenet(num_classes: int) -> None:
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        create_model("ghostnet_050", num_classes=num_classes)


def test_unknown_version_is_rejected() -> None:
    with pytest.raises(ValueError, match="version must be one of"):
        GhostNet(version="v4")  # type: ignore[arg-type]


def test_imagenet_meta_is_attached() -> None:
    meta = create_model("ghostnetv3_100").meta
    assert meta is not None
    assert (meta.architecture, meta.num_classes, meta.input_size) == ("ghostnetv3_100", 1000, (3, 224, 224))
    assert (meta.crop_pct, meta.interpolation) == (0.875, "bicubic")
    assert meta.labels[0] == "tench" and len(meta.labels) == 1000

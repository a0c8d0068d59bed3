"""Weights: round trips (safetensors, official torch layouts, S3), metadata, and every rejection path."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
from pathlib import Path

import pytest
import timm
import torch

from ghostnet import (
    AudioFrontend,
    ModelMeta,
    WeightsError,
    create_model,
    for_inference,
    init_random,
    load_weights,
    save_weights,
)

from .helpers import randomize


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def small_model() -> torch.nn.Module:
    return init_random(create_model("ghostnet_050", num_classes=10), seed=1)


@pytest.fixture
def saved(tmp_path: Path, small_model: torch.nn.Module) -> Path:
    path = tmp_path / "w.safetensors"
    save_weights(small_model, path)
    return path


def test_safetensors_round_trip_keeps_tensors_and_meta(saved: Path, small_model: torch.nn.Module) -> None:
    loaded = create_model("ghostnet_050", weights=saved, weights_sha256=_sha256(saved))
    _assert_same_tensors(loaded, small_model)
    assert loaded.meta == small_model.meta
    assert loaded.meta is not None and loaded.meta.num_classes == 10


def test_checkpoint_meta_overrides_labels_and_preprocessing(tmp_path: Path) -> None:
    model = create_model("ghostnet_050", num_classes=2)
    meta = ModelMeta(
        architecture="ghostnet_050",
        num_classes=2,
        in_chans=3,
        labels=("cat", "dog"),
        input_size=(3, 160, 160),
        crop_pct=0.95,
        interpolation="bilinear",
    )
    save_weights(model, tmp_path / "pets.safetensors", meta=meta)
    target = create_model("ghostnet_050", num_classes=2)
    assert load_weights(target, tmp_path / "pets.safetensors") == meta
    assert target.meta == meta
    assert create_model("ghostnet_050", weights=tmp_path / "pets.safetensors").meta == meta


def test_official_torch_layout_with_nested_state_dict_and_profiler_counters(tmp_path: Path) -> None:
    source = randomize(timm.create_model("ghostnet_050", pretrained=False), seed=2)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state |= {"total_ops": torch.zeros(1), "blocks.0.0.total_params": torch.zeros(1)}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ghostnet_1x.pth")
    model = create_model("ghostnet_050", weights=tmp_path / "ghostnet_1x.pth")
    _assert_same_tensors(model, source)


def test_official_v3_checkpoint_with_bn_names(tmp_path: Path) -> None:
    source = randomize(timm.create_model("ghostnetv3_050", pretrained=False), seed=3)
    official = {
        k.replace("bn1.", "bn.") if (".ghost" in k or ".dw_rpr_" in k) else k: v for k, v in source.state_dict().items()
    }
    assert any(".primary_rpr_conv.0.bn.weight" in k for k in official)
    torch.save({"state_dict": official, "state_dict_ema": official}, tmp_path / "ghostnetv3-1.0.pth.tar")
    model = create_model("ghostnetv3_050", weights=tmp_path / "ghostnetv3-1.0.pth.tar")
    _assert_same_tensors(model, source)


def test_s3_round_trip_with_sha256_pin(s3_env: str, saved: Path, small_model: torch.nn.Module) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("weights-bucket")
    fs.put(str(saved), "weights-bucket/w.safetensors")
    model = create_model("ghostnet_050", num_classes=10)
    meta = load_weights(model, "s3://weights-bucket/w.safetensors", sha256=_sha256(saved))
    assert meta == small_model.meta
    _assert_same_tensors(model, small_model)
    with pytest.raises(WeightsError, match=r"s3://weights-bucket/missing\.safetensors"):
        load_weights(model, "s3://weights-bucket/missing.safetensors")


def test_random_bytes_are_rejected(tmp_path: Path) -> None:
    # Many blobs: the weights-only unpickler fails on garbage in many ways (one was an IndexError).
    model = create_model("ghostnet_050")
    rng = random.Random(0)
    for i in range(200):
        path = tmp_path / f"noise{i}.bin"
        path.write_bytes(rng.randbytes(rng.choice([16, 300, 4096])))
        with pytest.raises(WeightsError, match="neither a safetensors nor"):
            load_weights(model, path)


def test_truncated_safetensors_is_rejected(tmp_path: Path, saved: Path) -> None:
    path = tmp_path / "cut.safetensors"
    path.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        load_weights(create_model("ghostnet_050", num_classes=10), path)


def test_v1_weights_do_not_load_into_v2(saved: Path) -> None:
    with pytest.raises(WeightsError, match="are for ghostnet_050, not ghostnetv2_100"):
        load_weights(create_model("ghostnetv2_100", num_classes=10), saved)
    anonymous = create_model("ghostnetv2_100", num_classes=10)
    anonymous.meta = None
    with pytest.raises(WeightsError, match=r"missing: blocks\.2\.0\.ghost1\.short_conv\.0\.weight") as info:
        load_weights(anonymous, saved)
    assert "mis-shaped" in str(info.value) and "(checkpoint (" in str(info.value)


def test_wrong_num_classes_is_rejected(saved: Path) -> None:
    with pytest.raises(WeightsError, match=r"classifier\.weight \(checkpoint \(10, 1280\), model \(1000, 1280\)\)"):
        load_weights(create_model("ghostnet_050"), saved)
    with pytest.raises(ValueError, match=r"num_classes=5 conflicts .* num_classes=10"):
        create_model("ghostnet_050", num_classes=5, weights=saved)


def test_failed_load_leaves_model_unchanged(saved: Path) -> None:
    model = create_model("ghostnet_050")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError):
        load_weights(model, saved)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_sha256_mismatch_names_expected_and_got(saved: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(WeightsError, match=f"expected {wrong}, got {_sha256(saved)}"):
        create_model("ghostnet_050", weights=saved, weights_sha256=wrong)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"conv_stem.weight": _Exploit(marker)}}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(WeightsError, match=r"refusing to load .*evil\.pth.*GLOBAL (posix|nt)\.system"):
        load_weights(create_model("ghostnet_050"), path)
    assert not marker.exists()


def test_hf_hub_offline_gives_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as info:
        load_weights(create_model("ghostnet_100"), "hf-hub:timm/ghostnet_100.in1k")
    message = str(info.value)
    assert "\n" not in message
    assert "hf-hub:timm/ghostnet_100.in1k" in message and "local path" in message


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="cannot read weights file"):
        load_weights(create_model("ghostnet_050"), tmp_path / "nope.safetensors")


def test_fused_model_cannot_be_saved_or_loaded(tmp_path: Path, saved: Path) -> None:
    fused = for_inference(create_model("ghostnet_050", num_classes=10))
    with pytest.raises(WeightsError, match="before fusing"):
        save_weights(fused, tmp_path / "fused.safetensors")
    with pytest.raises(WeightsError, match="load them first, then fuse"):
        load_weights(fused, saved)


def test_init_random_is_deterministic_per_seed() -> None:
    a = init_random(create_model("ghostnetv2_100"), seed=7)
    b = init_random(create_model("ghostnetv2_100"), seed=7)
    c = init_random(create_model("ghostnetv2_100"), seed=8)
    _assert_same_tensors(a, b)
    assert not torch.equal(a.conv_stem.weight, c.conv_stem.weight)


@pytest.mark.parametrize("name", ["ghostnet_050", "ghostnetv2_100", "ghostnetv3_050"])
def test_init_random_keeps_activations_bounded(name: str) -> None:
    model = init_random(create_model(name), seed=0).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(logits).all() and logits.abs().max().item() < 10


def test_meta_json_round_trip_with_audio_frontend() -> None:
    meta = ModelMeta(
        architecture="ghostnetv3_050",
        num_classes=3,
        in_chans=1,
        labels=("dog", "rain", "siren"),
        modality="audio",
        input_size=(1, 64, 101),
        mean=(0.0,),
        std=(1.0,),
        audio=AudioFrontend(
            sample_rate=16000,
            n_fft=512,
            hop_length=160,
            n_mels=64,
            f_min=50.0,
            f_max=None,
            window_s=1.0,
            hop_s=0.5,
            log_offset=1e-6,
        ),
    )
    assert ModelMeta.from_json(meta.to_json()) == meta


def test_meta_validation_and_bad_json() -> None:
    with pytest.raises(ValueError, match="2 labels for num_classes=3"):
        ModelMeta(architecture="ghostnet_050", num_classes=3, in_chans=3, labels=("a", "b"))
    with pytest.raises(ValueError, match="not a valid ModelMeta JSON"):
        ModelMeta.from_json('{"architecture": "x", "bogus": 1}')

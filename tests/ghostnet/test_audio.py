"""The log-mel front end: shapes, mel bands, padding for v2/v3, and audio model metadata."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import ghostnet
from ghostnet.audio import (
    DEFAULT_FRONTEND,
    LogMel,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    spectrogram_shape,
)

SILENCE = math.log(DEFAULT_FRONTEND.log_offset)


def audio_meta(name: str = "ghostnet_050", **frontend) -> ghostnet.ModelMeta:
    meta = ghostnet.default_meta(name, num_classes=3, modality="audio")
    fe = dataclasses.replace(DEFAULT_FRONTEND, **frontend)
    return dataclasses.replace(meta, audio=fe, input_size=(1, *spectrogram_shape(fe)))


def tone(hz: float, seconds: float = 1.0, rate: int = DEFAULT_FRONTEND.sample_rate) -> torch.Tensor:
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    return (0.5 * torch.sin(2 * math.pi * hz * t)).float()


def band_centres(fe=DEFAULT_FRONTEND) -> torch.Tensor:
    top = fe.f_max or fe.sample_rate / 2
    points = torch.linspace(float(hz_to_mel(fe.f_min)), float(hz_to_mel(top)), fe.n_mels + 2, dtype=torch.float64)
    return mel_to_hz(points)[1:-1]


def test_default_audio_model_metadata():
    model = ghostnet.create_model("ghostnetv2_100", num_classes=4, modality="audio")

    meta = model.meta
    assert meta.modality == "audio" and meta.audio == DEFAULT_FRONTEND
    assert meta.in_chans == 1 and model.conv_stem.in_channels == 1
    assert meta.labels == ("0", "1", "2", "3")
    assert meta.input_size == (1, 64, 101)


def test_log_mel_shape_dtype_and_silence_on_cpu():
    log_mel = LogMel(audio_meta())
    batch = torch.stack([tone(440.0), torch.zeros(16_000), torch.randn(16_000) * 0.1]).double()

    x = log_mel(batch)

    assert x.shape == (3, 1, 64, 101) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.isfinite(x).all()
    assert torch.allclose(x[1], torch.full_like(x[1], SILENCE)), "silence is log(log_offset) everywhere"


@pytest.mark.parametrize("band", [8, 25, 40, 60])
def test_pure_tone_peaks_in_its_mel_band(band):
    centre = float(band_centres()[band])

    x = LogMel(audio_meta())(tone(centre)[None])

    assert int(x[0, 0].mean(dim=-1).argmax()) == band


def test_mel_scale_is_htk():
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2))
    assert float(mel_to_hz(hz_to_mel(1234.5))) == pytest.approx(1234.5)


def test_filterbank_triangles_peak_at_one_and_cover_every_band():
    fb = mel_filterbank(DEFAULT_FRONTEND)

    assert fb.shape == (64, 257) and fb.dtype == torch.float32
    assert float(fb.min()) == 0.0 and float(fb.max()) <= 1.0
    assert bool((fb.sum(dim=1) > 0).all()), "no empty band at the default settings"


def test_mean_and_std_from_the_metadata_are_applied():
    meta = dataclasses.replace(audio_meta(), mean=(-5.0,), std=(2.0,))
    wave = tone(1000.0)[None]

    plain, scaled = LogMel(audio_meta())(wave), LogMel(meta)(wave)

    assert torch.allclose(scaled, (plain + 5.0) / 2.0, atol=1e-5)


def test_short_windows_are_padded_with_silence_for_v2(tmp_path):
    meta = audio_meta("ghostnetv2_100", window_s=0.2, hop_s=0.2)
    assert spectrogram_shape(meta.audio) == (64, 21)
    path = tmp_path / "short.safetensors"
    ghostnet.save_weights(ghostnet.create_model("ghostnetv2_100", num_classes=3, modality="audio"), path, meta)
    model = ghostnet.for_inference(ghostnet.create_model("ghostnetv2_100", weights=path))

    x = LogMel(model.meta, min_frames=model.min_input_size)(tone(500.0, 0.2)[None])

    assert x.shape == (1, 1, 64, 33)
    assert torch.equal(x[..., 21:], torch.full_like(x[..., 21:], SILENCE))
    assert model.forward_all(x, embeddings=False).logits.shape == (1, 3)


def test_too_few_mel_bands_refused_for_v2_at_load_time(tmp_path):
    path = tmp_path / "narrow.safetensors"
    source = ghostnet.create_model("ghostnetv2_100", num_classes=3, modality="audio")
    ghostnet.save_weights(source, path, audio_meta("ghostnetv2_100", n_mels=32))

    with pytest.raises(ValueError, match=r"n_mels=32 is below the 33 px"):
        ghostnet.create_model("ghostnetv2_100", weights=path)


def test_v1_takes_few_mel_bands(tmp_path):
    path = tmp_path / "v1.safetensors"
    ghostnet.save_weights(ghostnet.create_model("ghostnet_050", num_classes=3, modality="audio"), path,
                          audio_meta(n_mels=16))

    model = ghostnet.create_model("ghostnet_050", weights=path)

    assert LogMel(model.meta)(tone(300.0)[None]).shape == (1, 1, 16, 101)


def test_modality_must_match_the_checkpoint(tmp_path):
    path = tmp_path / "image.safetensors"
    ghostnet.save_weights(ghostnet.create_model("ghostnet_050", num_classes=3), path)

    with pytest.raises(ValueError, match="modality=audio conflicts with the checkpoint"):
        ghostnet.create_model("ghostnet_050", weights=path, modality="audio")


def test_audio_models_take_one_channel():
    with pytest.raises(ValueError, match="1 input channel"):
        ghostnet.create_model("ghostnet_050", num_classes=3, in_chans=2, modality="audio")

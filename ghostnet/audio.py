"""Log-mel front end for GhostNet audio models: a mono waveform window becomes a 1-channel image.

The front end is fully described by a checkpoint's `AudioFrontend`, so training and inference
compute the same input:

- STFT with a periodic Hann window of `n_fft` samples, `hop_length` hop, centred frames with
  reflect padding (torchaudio's and librosa's defaults), power spectrum |X|^2;
- a triangular mel filterbank on the HTK mel scale (`2595 * log10(1 + f / 700)`), peak 1, no
  area normalisation, from `f_min` to `f_max` (Nyquist when None);
- `log(mel + log_offset)`, then `(x - mean) / std` with the model's one-channel statistics.

A window of `window_s` seconds gives `n_mels x (1 + window_samples // hop_length)` pixels.
GhostNet v2/v3 need both sides >= 33 (DFC attention pools 2x2 at stride 32): the time axis is
padded at the end with the log-mel value of silence, `log(log_offset)`, the same thing a clip
that ends early gets; too few mel bands is refused when the model is built, because padding
that axis would invent frequency bands the front end never computes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .meta import AudioFrontend, ModelMeta

__all__ = [
    "DEFAULT_FRONTEND",
    "LogMel",
    "check_frontend",
    "hop_samples",
    "hz_to_mel",
    "mel_filterbank",
    "mel_to_hz",
    "spectrogram_shape",
    "window_samples",
]

# 1 s windows every 0.5 s at 16 kHz, 25 ms FFT frames every 10 ms, 64 mel bands: 64 x 101 pixels.
DEFAULT_FRONTEND = AudioFrontend(
    sample_rate=16_000,
    n_fft=512,
    hop_length=160,
    n_mels=64,
    f_min=0.0,
    f_max=None,
    window_s=1.0,
    hop_s=0.5,
    log_offset=1e-6,
)


def window_samples(frontend: AudioFrontend) -> int:
    """Samples in one model window at the front end's rate."""
    return round(frontend.window_s * frontend.sample_rate)


def hop_samples(frontend: AudioFrontend) -> int:
    """Samples between the starts of consecutive windows."""
    return round(frontend.hop_s * frontend.sample_rate)


def spectrogram_shape(frontend: AudioFrontend) -> tuple[int, int]:
    """(mel bands, frames) of one window, before any padding."""
    return frontend.n_mels, 1 + window_samples(frontend) // frontend.hop_length


def hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor | float) -> torch.Tensor:
    """Inverse of `hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def _f_max(frontend: AudioFrontend) -> float:
    return frontend.sample_rate / 2 if frontend.f_max is None else frontend.f_max


def mel_filterbank(frontend: AudioFrontend) -> torch.Tensor:
    """Triangular HTK filters as a float32 (n_mels, n_fft // 2 + 1) matrix, each peaking at 1.

    Band m rises from mel point m to m + 1 and falls to m + 2, with `n_mels + 2` points spaced
    evenly in mel between `f_min` and `f_max`.
    """
    edges = mel_to_hz(
        torch.linspace(float(hz_to_mel(frontend.f_min)), float(hz_to_mel(_f_max(frontend))), frontend.n_mels + 2,
                       dtype=torch.float64)
    )
    bins = torch.linspace(0.0, frontend.sample_rate / 2, frontend.n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def check_frontend(meta: ModelMeta, min_input_size: int) -> None:
    """Refuse an audio model whose front end cannot feed it; call before any audio is decoded.

    Raises:
        ValueError: every problem found, each with the value that causes it.
    """
    fe = meta.audio
    if meta.modality != "audio" or fe is None:
        raise ValueError(f"{meta.architecture}: not an audio model (modality {meta.modality!r})")
    checks = [
        (meta.in_chans == 1, f"the log-mel front end makes 1 input channel, the model takes in_chans={meta.in_chans}"),
        (fe.sample_rate > 0 and fe.n_fft >= 2 and fe.hop_length >= 1,
         f"need positive sample_rate, n_fft and hop_length, got {fe.sample_rate}, {fe.n_fft}, {fe.hop_length}"),
        (0 < fe.hop_s <= fe.window_s, f"need 0 < hop_s <= window_s, got hop_s={fe.hop_s}, window_s={fe.window_s}"),
        (window_samples(fe) >= fe.n_fft, f"a {fe.window_s} s window is shorter than one n_fft={fe.n_fft} frame"),
        (0 <= fe.f_min < _f_max(fe) <= fe.sample_rate / 2,
         f"need 0 <= f_min < f_max <= sample_rate / 2, got {fe.f_min}, {fe.f_max}, {fe.sample_rate}"),
        (fe.log_offset > 0, f"log_offset must be positive, got {fe.log_offset}"),
        (fe.n_mels >= min_input_size,
         f"n_mels={fe.n_mels} is below the {min_input_size} px this architecture needs per side "
         "(GhostNet v2/v3 DFC attention); use n_mels >= 33 or a GhostNet v1"),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise ValueError(f"audio front end of {meta.architecture} is unusable: " + "; ".join(problems))


class LogMel(nn.Module):
    """Waveform windows (N, samples) -> normalised log-mel images (N, 1, n_mels, frames), float32.

    `min_frames` pads the time axis with the value of silence up to a model's minimum input size.
    Move it to the model's device with `.to(device)`; it computes in float32 whatever the input.
    """

    window: torch.Tensor
    filterbank: torch.Tensor

    def __init__(self, meta: ModelMeta, *, min_frames: int = 1) -> None:
        super().__init__()
        if meta.audio is None:
            raise ValueError(f"{meta.architecture}: LogMel needs a model with an audio front end")
        self.frontend = meta.audio
        self.min_frames = min_frames
        self.register_buffer("window", torch.hann_window(self.frontend.n_fft, periodic=True), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(self.frontend), persistent=False)
        self.mean = float(meta.mean[0])
        self.std = float(meta.std[0])

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.ndim != 2:
            raise ValueError(f"expected waveforms of shape (N, samples), got {tuple(waveform.shape)}")
        spectrum = torch.stft(
            waveform.to(self.window.device, torch.float32),
            n_fft=self.frontend.n_fft,
            hop_length=self.frontend.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        mel = self.filterbank @ spectrum.abs().square()
        log_mel = torch.log(mel + self.frontend.log_offset)
        log_mel = self._pad_time(log_mel)
        return ((log_mel - self.mean) / self.std).unsqueeze(1)

    def _pad_time(self, log_mel: torch.Tensor) -> torch.Tensor:
        missing = self.min_frames - log_mel.shape[-1]
        if missing <= 0:
            return log_mel
        return nn.functional.pad(log_mel, (0, missing), value=math.log(self.frontend.log_offset))

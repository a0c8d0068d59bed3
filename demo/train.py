"""Train a tiny demo model on `demo.samples` (``ghostnet-pipeline train`` runs this).

Reproducible from its seed. The inputs go through the checkpoint's own preprocessing (images:
`resize_crop` + `normalize`; audio: `LogMel` on 1 s windows), exactly what the pipeline does with
the saved metadata, so training and inference see the same tensors. Tensors are saved as
float16 to keep the shipped files small; they load into the float32 model unchanged, and the
printed accuracy is measured on the reloaded file.

The shipped models were made with the commands in `jobs/train.py`.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import ghostnet
from demo import samples
from ghostnet.meta import AudioFrontend

ARCHITECTURE = "ghostnet_050"
IMAGE_INPUT = 48
# Smaller than the default front end (40 mels x 51 frames instead of 64 x 101): a quarter of the pixels.
AUDIO_FRONTEND = AudioFrontend(
    sample_rate=samples.SAMPLE_RATE, n_fft=512, hop_length=320, n_mels=40, f_min=50.0, f_max=None,
    window_s=1.0, hop_s=0.5, log_offset=1e-6,
)
EVAL_SEED_OFFSET = 1_000_003
EVAL_SAMPLES = 400


@dataclass(frozen=True)
class TrainResult:
    path: Path
    accuracy: float  # top-1 on EVAL_SAMPLES fresh samples, with the saved (float16) weights
    eval_samples: int
    seconds: float


def image_meta() -> ghostnet.ModelMeta:
    return ghostnet.ModelMeta(
        architecture=ARCHITECTURE, num_classes=len(samples.IMAGE_CLASSES), in_chans=3,
        labels=samples.IMAGE_CLASSES, modality="image", input_size=(3, IMAGE_INPUT, IMAGE_INPUT),
        crop_pct=1.0, interpolation="bilinear",
    )


def audio_meta(mean: float = 0.0, std: float = 1.0) -> ghostnet.ModelMeta:
    shape = ghostnet.audio.spectrogram_shape(AUDIO_FRONTEND)
    return ghostnet.ModelMeta(
        architecture=ARCHITECTURE, num_classes=len(samples.AUDIO_CLASSES), in_chans=1,
        labels=samples.AUDIO_CLASSES, modality="audio", input_size=(1, *shape),
        mean=(mean,), std=(std,), audio=AUDIO_FRONTEND,
    )


def _labels(count: int, classes: int) -> torch.Tensor:
    return torch.arange(count) % classes


def image_inputs(count: int, seed: int, meta: ghostnet.ModelMeta) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` pictures as the pipeline feeds them to the model, and their class indices."""
    rng = random.Random(seed)
    y = _labels(count, len(meta.labels))
    pixels = [ghostnet.resize_crop(samples.make_image(meta.labels[i], rng), meta) for i in y.tolist()]
    return ghostnet.normalize(torch.from_numpy(np.stack(pixels)), meta), y


def _window_of_clip(kind: str, rng: random.Random, frontend: AudioFrontend) -> torch.Tensor:
    """One model window of a demo-like clip (1 to 2 s), at one of the offsets the pipeline cuts."""
    clip = samples.make_sound(kind, rng, rng.choice(samples.AUDIO_DURATIONS_S))
    size, hop = ghostnet.audio.window_samples(frontend), ghostnet.audio.hop_samples(frontend)
    start = hop * rng.randrange((len(clip) - size) // hop + 1)
    return torch.from_numpy(clip[start : start + size])


def audio_inputs(count: int, seed: int, meta: ghostnet.ModelMeta) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` windows of generated clips as log-mel model inputs (`meta`'s normalisation), and their classes."""
    rng = random.Random(seed)
    y = _labels(count, len(meta.labels))
    if meta.audio is None:
        raise ValueError(f"{meta.architecture} is not an audio model: its metadata has no audio front end")
    frontend = meta.audio
    waves = torch.stack([_window_of_clip(meta.labels[i], rng, frontend) for i in y.tolist()])
    with torch.no_grad():
        return ghostnet.LogMel(meta)(waves), y


def _inputs(modality: str, count: int, seed: int, meta: ghostnet.ModelMeta) -> tuple[torch.Tensor, torch.Tensor]:
    return (image_inputs if modality == "image" else audio_inputs)(count, seed, meta)


def _fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int, lr: float,
         seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for step in range(steps):
        batch = torch.randint(0, len(y), (batch_size,), generator=generator)
        loss = F.cross_entropy(model(x[batch]), y[batch], label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            logging.getLogger("ghostnet_pipeline").info("step %d/%d loss %.3f", step + 1, steps, loss.item())


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(1) for chunk in torch.split(x, 64)])
    return float((predicted == y).float().mean())


def _normalised_audio_meta(x: torch.Tensor) -> ghostnet.ModelMeta:
    """The audio meta with the training log-mels' mean and std, so inputs are roughly unit scale."""
    return audio_meta(round(float(x.mean()), 3), round(float(x.std()), 3))


def train(modality: str, out: Path, *, seed: int, steps: int = 300, sample_count: int = 2400,
          batch_size: int = 32, lr: float = 3e-3, threads: int = 1) -> TrainResult:
    """Train `ARCHITECTURE` on `sample_count` generated samples for `steps` steps and save it to `out`."""
    started = time.monotonic()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    meta = image_meta() if modality == "image" else audio_meta()
    x, y = _inputs(modality, sample_count, seed, meta)
    if modality == "audio":
        meta = _normalised_audio_meta(x)
        x = (x - meta.mean[0]) / meta.std[0]
    model = ghostnet.create_model(ARCHITECTURE, num_classes=meta.num_classes, modality=modality)
    model.meta = meta
    _fit(model, x, y, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    ghostnet.save_weights(model.half(), out, meta)
    reloaded = ghostnet.create_model(ARCHITECTURE, weights=out)
    eval_x, eval_y = _inputs(modality, EVAL_SAMPLES, seed + EVAL_SEED_OFFSET, meta)
    return TrainResult(out, accuracy(reloaded, eval_x, eval_y), EVAL_SAMPLES, time.monotonic() - started)

"""The audio front end and the audio Predictor on a GPU, against the CPU and against torchaudio.

Writes one JSON results file with the numbers of RESULTS.md's "Audio front end on GPU" table:

- ``log_mel``: ``ghostnet.LogMel`` (default front end) on 16 one-second windows (noise, silence,
  1 kHz tone) against two references of the same definition, on every device present: torchaudio's
  ``MelSpectrogram(n_fft, hop, periodic Hann, center, reflect, power 2, HTK mel, norm=None)`` then
  ``log(x + log_offset)`` (skipped, and said so, where torchaudio does not import), and an
  independent numpy one (``numpy.fft.rfft`` + the HTK filterbank written out here). Max absolute
  difference of the log-mel (before the model's mean/std normalisation).
- ``top1``: the real ``pipeline.predict.Predictor`` (random ghostnetv2_100, 10 classes, default
  front end, seed 0 in both) on 256 one-second windows: fp16 on the GPU vs fp32 on the CPU, how
  many of the 256 top-1 labels agree, and the largest top-1 score difference.
- ``throughput``: ``Predictor.__call__`` on an Arrow batch of 256 windows as the decode stage
  hands it over (float32 bytes in host memory: log-mel, model, channel weights, partials, rows),
  and ``LogMel`` alone on the same 256 windows from host memory; windows/s from the median call,
  on each device present.

On a machine without CUDA the GPU parts are skipped and marked so; the CPU parts run (a check that
the script works, with CPU numbers that are not the GPU table's).

    python bench/gpu_audio.py [--iters 20] [--out bench/results/gpu_audio.json]

On the device machine: ``pipeline.predict`` imports ``pipeline.audio``, which needs soundfile and
soxr; the machine has neither, the Ray carry has both (tools/pack_ray_for_gpu_machine.sh here, then
there: ``eval "$(python3 tools/unpack_carry.py .gpu-carry/ray-carry-py312.tar.xz /tmp/carry)"``),
then ``python3 bench/gpu_audio.py --out $OUT/gpu_audio.json``; copy the file to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import soundfile  # noqa: F401 - pipeline.predict needs it through pipeline.audio
    import soxr  # noqa: F401
except ImportError as exc:
    raise SystemExit(f"{exc}: on the GPU machine, unpack the Ray carry first (see this script's docstring)") from exc

import ghostnet
from ghostnet.audio import DEFAULT_FRONTEND, window_samples
from pipeline import predict
from pipeline.model import ModelSpec
from pipeline.schema import DECODED, LAST, SHARD

MODEL = "ghostnetv2_100"
CLASSES = 10
BATCH = 256


def devices() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_windows() -> np.ndarray:
    """16 windows: 6 of white noise, 5 of silence, 5 of a 1 kHz tone (amplitudes 0.1-0.5)."""
    rate, n = DEFAULT_FRONTEND.sample_rate, window_samples(DEFAULT_FRONTEND)
    rng = np.random.default_rng(0)
    t = np.arange(n) / rate
    noise = [0.3 * rng.standard_normal(n) for _ in range(6)]
    silence = [np.zeros(n) for _ in range(5)]
    tones = [a * np.sin(2 * np.pi * 1000 * t) for a in (0.1, 0.2, 0.3, 0.4, 0.5)]
    return np.stack(noise + silence + tones).astype(np.float32)


def many_windows(count: int) -> np.ndarray:
    """``count`` varied windows: tones of different pitches and loudness, chirps, noise, mixtures."""
    rate, n = DEFAULT_FRONTEND.sample_rate, window_samples(DEFAULT_FRONTEND)
    rng = np.random.default_rng(1)
    t = np.arange(n) / rate
    out = np.empty((count, n), np.float32)
    for i in range(count):
        kind = i % 4
        hz = rng.uniform(80, 6000)
        if kind == 0:
            x = np.sin(2 * np.pi * hz * t)
        elif kind == 1:
            x = np.sin(2 * np.pi * (hz + rng.uniform(-2000, 2000) * t / 2) * t)
        elif kind == 2:
            x = rng.standard_normal(n) * rng.uniform(0.1, 1.0)
        else:
            x = np.sin(2 * np.pi * hz * t) + 0.3 * rng.standard_normal(n)
        out[i] = rng.uniform(0.05, 0.5) * x / max(1e-6, float(np.abs(x).max()))
    return out


def numpy_log_mel(waveforms: np.ndarray) -> np.ndarray:
    """The front end's definition written out in numpy (float64), independent of ghostnet.audio."""
    f = DEFAULT_FRONTEND
    n_fft, hop = f.n_fft, f.hop_length
    padded = np.pad(waveforms.astype(np.float64), ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    frames = 1 + (padded.shape[1] - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(padded[:, index] * window, axis=-1)) ** 2  # (N, frames, bins)

    def hz_to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def mel_to_hz(mel):
        return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)

    f_max = f.f_max if f.f_max is not None else f.sample_rate / 2
    bins = np.linspace(0, f.sample_rate / 2, n_fft // 2 + 1)
    points = mel_to_hz(np.linspace(hz_to_mel(f.f_min), hz_to_mel(f_max), f.n_mels + 2))
    slopes = points[None, :] - bins[:, None]
    down = -slopes[:, :-2] / np.diff(points)[:-1]
    up = slopes[:, 2:] / np.diff(points)[1:]
    bank = np.maximum(0.0, np.minimum(down, up))  # (bins, mels), peak 1, no area normalisation
    mel = power @ bank  # (N, frames, mels)
    return np.log(mel + f.log_offset).transpose(0, 2, 1)


def torchaudio_log_mel(waveforms: torch.Tensor, device: torch.device) -> torch.Tensor:
    import torchaudio

    f = DEFAULT_FRONTEND
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=f.sample_rate, n_fft=f.n_fft, hop_length=f.hop_length, f_min=f.f_min, f_max=f.f_max,
        n_mels=f.n_mels, window_fn=torch.hann_window, power=2.0, center=True, pad_mode="reflect",
        norm=None, mel_scale="htk",
    ).to(device)
    return torch.log(transform(waveforms.to(device)) + f.log_offset)


def log_mel_check(model_meta: ghostnet.ModelMeta) -> dict:
    waveforms = check_windows()
    reference = numpy_log_mel(waveforms)
    try:
        import torchaudio

        torchaudio_version: str | None = torchaudio.__version__
        torchaudio_error = None
    except Exception as exc:  # noqa: BLE001 - the CPU machines here cannot import it
        torchaudio_version, torchaudio_error = None, f"{type(exc).__name__}: {exc}"[:300]
    result: dict = {"windows": "6 white noise, 5 silence, 5 tones of 1 kHz", "count": len(waveforms),
                    "torchaudio": torchaudio_version or f"not importable ({torchaudio_error})",
                    "compared": "log-mel before the model's mean/std normalisation", "by_device": {}}
    for device in devices():
        log_mel = ghostnet.LogMel(model_meta).to(device)
        with torch.inference_mode():
            ours = log_mel(torch.from_numpy(waveforms).to(device)).squeeze(1)
            ours = (ours * log_mel.std + log_mel.mean).double()  # undo the normalisation
            row = {"max_abs_diff_vs_numpy": float((ours.cpu() - torch.from_numpy(reference)).abs().max())}
            if torchaudio_version:
                theirs = torchaudio_log_mel(torch.from_numpy(waveforms), device).double()
                row["max_abs_diff_vs_torchaudio"] = float((ours - theirs).abs().max())
            else:
                row["max_abs_diff_vs_torchaudio"] = None
        result["by_device"][device.type] = row
    return result


def decoded_table(waveforms: np.ndarray) -> pa.Table:
    """The Arrow batch the audio decode stage hands to the Predictor (one item per window here)."""
    n = len(waveforms)
    return pa.table({
        "uri": [f"file:///bench/clip-{i:04d}.wav" for i in range(n)], "etag": [None] * n,
        "size_bytes": [None] * n, "modality": ["audio"] * n, "segment": [0] * n,
        "start_s": [0.0] * n, "end_s": [DEFAULT_FRONTEND.window_s] * n, "status": ["ok"] * n,
        "error": [None] * n, "encoding": ["raw"] * n, "encoded": [w.tobytes() for w in waveforms],
        SHARD: [0] * n, LAST: [True] * n, "_models": [1] * n, "_group": [0] * n,
    }, schema=DECODED)


def predictor_on(device: torch.device) -> predict.Predictor:
    spec = ModelSpec(MODEL, "random", num_classes=CLASSES, modality="audio")
    with mock.patch.object(predict, "pick_device", lambda: device):
        return predict.Predictor(spec, run_id="bench", batch_size=BATCH)


def top1(rows: pa.Table) -> tuple[list[str], np.ndarray]:
    if set(rows["status"].to_pylist()) != {"ok"}:
        raise RuntimeError(f"the Predictor did not label every window: {rows['status'].value_counts()}")
    return rows["label"].to_pylist(), np.array(rows["score"].to_pylist())


def agreement(predictors: dict[str, predict.Predictor], batch: pa.Table) -> dict:
    cpu_labels, cpu_scores = top1(predictors["cpu"](batch))
    spread = {"distinct_top1_labels_cpu": len(set(cpu_labels))}  # agreement means little if all are one label
    if "cuda" not in predictors:
        return {"windows": batch.num_rows, **spread, "skipped": "no CUDA device"}
    gpu_labels, gpu_scores = top1(predictors["cuda"](batch))
    return {"windows": batch.num_rows, **spread, "gpu_dtype": str(predictors["cuda"].dtype),
            "cpu_dtype": str(predictors["cpu"].dtype),
            "top1_identical": sum(a == b for a, b in zip(cpu_labels, gpu_labels, strict=True)),
            "max_top1_score_diff": float(np.abs(cpu_scores - gpu_scores).max())}


def seconds_per_call(fn, device: torch.device, iters: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def throughput(predictors: dict[str, predict.Predictor], waveforms: np.ndarray, iters: int) -> dict:
    batch = decoded_table(waveforms)
    out = {}
    for name, predictor in predictors.items():
        device = predictor.device
        log_mel = ghostnet.LogMel(predictor.meta).to(device)

        def log_mel_only(log_mel=log_mel, device=device):
            with torch.inference_mode():
                return log_mel(torch.from_numpy(waveforms).to(device))

        call_s = seconds_per_call(lambda predictor=predictor: predictor(batch), device, iters)
        mel_s = seconds_per_call(log_mel_only, device, iters)
        out[name] = {"dtype": str(predictor.dtype), "batch": len(waveforms), "iters": iters,
                     "torch_threads": torch.get_num_threads(),
                     "predictor_call_windows_per_s": round(len(waveforms) / call_s, 1),
                     "predictor_call_ms_median": round(1000 * call_s, 2),
                     "log_mel_windows_per_s": round(len(waveforms) / mel_s, 1),
                     "log_mel_ms_median": round(1000 * mel_s, 3)}
    if "cuda" not in out:
        out["cuda"] = {"skipped": "no CUDA device"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=20, help="timed calls per throughput figure (median)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results/gpu_audio.json, or gpu_audio-cpu-only.json without CUDA")
    args = parser.parse_args()
    if args.out is None:
        name = "gpu_audio.json" if torch.cuda.is_available() else "gpu_audio-cpu-only.json"
        args.out = Path(__file__).parent / "results" / name
    load_at_start = os.getloadavg()[0]
    predictors = {d.type: predictor_on(d) for d in devices()}
    meta = predictors["cpu"].meta
    if meta.audio != DEFAULT_FRONTEND or len(meta.labels) != CLASSES:
        raise RuntimeError(f"unexpected model: {meta}")
    report = {
        "benchmark": "audio front end and audio Predictor: GPU vs CPU vs torchaudio",
        "script": "bench/gpu_audio.py",
        "argv": sys.argv[1:],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                   "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "model": {"name": MODEL, "weights": "random (seed 0)", "classes": CLASSES,
                  "frontend": "ghostnet.audio.DEFAULT_FRONTEND"},
        "log_mel": log_mel_check(meta),
    }
    print(f"log-mel: {report['log_mel']}", flush=True)
    report["top1"] = agreement(predictors, decoded_table(many_windows(BATCH)))
    print(f"top-1: {report['top1']}", flush=True)
    report["throughput"] = throughput(predictors, many_windows(BATCH), args.iters)
    print(f"throughput: {report['throughput']}", flush=True)
    report["load_avg_1min"] = {"start": load_at_start, "end": os.getloadavg()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Peak memory of the audio decode stage on long files: streaming must keep it flat.

Writes clips of each length to disk one second at a time (never whole in memory), then decodes
each in a fresh subprocess through `pipeline.audio.read_and_decode_audio` (no Ray), dropping the
batches as they come. The subprocess resets its peak-RSS mark after imports (Linux
`/proc/self/clear_refs`) and reports the peak (`VmHWM`) over the RSS it had then. A control row
reads a clip whole with `soundfile.read`, to show what the measurement sees when memory does
grow with length.

    python bench/audio_memory.py [--minutes 10 60] [--rate 44100] [--channels 2] [--format FLAC]
        [--out bench/results/audio_memory.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import soundfile as sf

MIB = 2**20


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_clip(path: Path, minutes: int, rate: int, channels: int, fmt: str) -> None:
    """A chirp sweep with quiet noise, written one second at a time."""
    rng = np.random.default_rng(0)
    t = np.arange(rate) / rate
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, format=fmt, subtype="PCM_16") as out:
        for second in range(minutes * 60):
            hz = 100 + (second % 60) * 50
            mono = 0.4 * np.sin(2 * np.pi * hz * t) + 0.01 * rng.standard_normal(rate)
            out.write(np.repeat(mono[:, None], channels, axis=1).astype(np.float32))


def reset_peak_rss() -> int:
    """Start a new peak-RSS mark at the current RSS, and return that RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_stream(path: str) -> dict:
    """Run in the subprocess: decode through the stage function, keep nothing."""
    from ghostnet.audio import DEFAULT_FRONTEND
    from pipeline.audio import read_and_decode_audio
    from pipeline.schema import ITEMS, SHARD

    items = pa.table({"uri": [path], "etag": [None], "size_bytes": [Path(path).stat().st_size],
                      "modality": ["audio"], SHARD: [0]},
                     schema=ITEMS.append(pa.field(SHARD, pa.int32())))
    baseline = reset_peak_rss()
    started = time.perf_counter()
    windows = sum(len(batch["uri"]) for batch in read_and_decode_audio(items, frontends=[DEFAULT_FRONTEND]))
    return {"windows": windows, "seconds": time.perf_counter() - started, "growth": peak_rss_bytes() - baseline}


def measure_whole(path: str) -> dict:
    """Run in the subprocess: the control, `soundfile.read` of the whole clip."""
    baseline = reset_peak_rss()
    started = time.perf_counter()
    data, _ = sf.read(path, dtype="float32")
    return {"windows": None, "seconds": time.perf_counter() - started, "growth": peak_rss_bytes() - baseline,
            "frames": len(data)}


def in_subprocess(mode: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", mode, str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {mode} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, nargs="+", default=[10, 60])
    parser.add_argument("--rate", type=int, default=44_100)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--format", default="FLAC", choices=["FLAC", "WAV"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "audio_memory.json")
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        mode, path = args.measure
        print(json.dumps((measure_stream if mode == "stream" else measure_whole)(path)))
        return

    import soxr

    load_at_start = os.getloadavg()[0]
    print(f"{dt.date.today()} · {platform.node()} · {platform.processor() or platform.machine()} · "
          f"Python {platform.python_version()} · {args.format} {args.rate} Hz x {args.channels} ch, PCM16 · "
          f"load average (1 min) {load_at_start:.2f}")
    print("| clip | file MiB | how | windows | decode s | x realtime | peak RSS growth MiB |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory(prefix="audio-memory-") as scratch:
        for minutes in args.minutes:
            path = Path(scratch) / f"{minutes}min.{args.format.lower()}"
            write_clip(path, minutes, args.rate, args.channels, args.format)
            modes = ["stream", "whole"] if minutes == min(args.minutes) else ["stream"]
            for mode in modes:
                r = in_subprocess(mode, path)
                row = {"minutes": minutes, "file_bytes": path.stat().st_size, "mode": mode,
                       "windows": r["windows"], "decode_s": round(r["seconds"], 3),
                       "x_realtime": round(minutes * 60 / r["seconds"], 1),
                       "peak_rss_growth_bytes": r["growth"],
                       "peak_rss_growth_mib": round(r["growth"] / MIB, 1)}
                rows.append(row)
                print(f"| {minutes} min | {row['file_bytes'] / MIB:.0f} | {mode} | {r['windows'] or '-'} | "
                      f"{r['seconds']:.1f} | {row['x_realtime']:.0f} | {row['peak_rss_growth_mib']:.1f} |",
                      flush=True)
            path.unlink()
    report = {
        "benchmark": "audio decode stage: peak RSS growth, streaming vs reading whole",
        "script": "bench/audio_memory.py",
        "argv": sys.argv[1:],
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "soundfile": sf.__version__,
                     "libsndfile": sf.__libsndfile_version__, "soxr": soxr.__version__},
        "load_avg_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
        "clip": {"format": args.format, "rate": args.rate, "channels": args.channels, "subtype": "PCM_16"},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")

if __name__ == "__main__":
    main()

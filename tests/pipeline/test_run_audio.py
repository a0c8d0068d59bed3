"""Audio end to end: the decode stage on generated clips and broken files, then real runs.

Clips are made on the spot with numpy + soundfile: tones, chirps, noise and silence at 8 to
48 kHz, 1/2/6 channels, WAV (PCM16, float32), FLAC and OGG/Vorbis, 0.1 s to 20 s.
"""

from __future__ import annotations

import io
import math
import os
import tracemalloc
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from analytics import views
from ghostnet.audio import DEFAULT_FRONTEND, hop_samples, window_samples
from jobs._run_config import config_from_args
from jobs.run import COMMAND
from pipeline.audio import item_windows, read_and_decode_audio
from pipeline.config import RunConfig
from pipeline.errors import UsageError
from pipeline.run import run, run_by_modality
from tests import corpus
from tests.output import committed, run_records

RATE = DEFAULT_FRONTEND.sample_rate
WIDTH, STEP = window_samples(DEFAULT_FRONTEND), hop_samples(DEFAULT_FRONTEND)


def signal(kind: str, rate: int, seconds: float, channels: int, seed: int = 0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    mono = {
        "tone": lambda: 0.5 * np.sin(2 * np.pi * 440 * t),
        "chirp": lambda: 0.5 * np.sin(2 * np.pi * (100 + 1900 * t / max(seconds, 1e-9)) * t),
        "noise": lambda: 0.2 * rng.standard_normal(len(t)),
        "silence": lambda: np.zeros(len(t)),
    }[kind]()
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


# name: (signal, rate, seconds, channels, format, subtype)
CLIPS = {
    "tone_8k_mono.wav": ("tone", 8_000, 0.1, 1, "WAV", "PCM_16"),
    "chirp_16k_stereo_long.wav": ("chirp", 16_000, 20.3, 2, "WAV", "FLOAT"),
    "noise_22k_6ch.flac": ("noise", 22_050, 2.7, 6, "FLAC", "PCM_16"),
    "silence_44k_mono.ogg": ("silence", 44_100, 1.0, 1, "OGG", "VORBIS"),
    "tone_48k_6ch_float.wav": ("tone", 48_000, 3.25, 6, "WAV", "FLOAT"),
    "chirp_44k_stereo.flac": ("chirp", 44_100, 0.75, 2, "FLAC", "PCM_24"),
    "noise_48k_stereo.ogg": ("noise", 48_000, 5.5, 2, "OGG", "VORBIS"),
    "tone_16k_exactly_2s.wav": ("tone", 16_000, 2.0, 1, "WAV", "PCM_16"),
}
BROKEN = {  # name: expected status
    "truncated.wav": "decode_error",
    "zero_bytes.wav": "empty",
    "random_bytes.wav": "decode_error",
    "text.flac": "decode_error",
}


def encode(kind: str, rate: int, seconds: float, channels: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, signal(kind, rate, seconds, channels), rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def broken_files() -> dict[str, bytes]:
    whole = encode("tone", 16_000, 2.0, 1, "WAV", "PCM_16")
    return {
        "truncated.wav": whole[: len(whole) // 2],
        "zero_bytes.wav": b"",
        "random_bytes.wav": np.random.default_rng(1).bytes(3000),
        "text.flac": b"these are notes, not a FLAC stream\n" * 20,
    }


def audio_corpus() -> dict[str, bytes]:
    return {**{name: encode(*spec) for name, spec in CLIPS.items()}, **broken_files()}


def expected_windows(data: bytes) -> int:
    """ceil((duration - window) / hop) + 1, or 1 for a clip no longer than a window, at the model rate."""
    info = sf.info(io.BytesIO(data))
    samples = round(info.frames * RATE / info.samplerate)
    return 1 if samples <= WIDTH else math.ceil((samples - WIDTH) / STEP) + 1


def duration(data: bytes) -> float:
    info = sf.info(io.BytesIO(data))
    return info.frames / info.samplerate


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def items_table(paths: list[Path]) -> pa.Table:
    return pa.table({
        "uri": [str(p) for p in paths],
        "etag": pa.array([None] * len(paths), pa.string()),
        "size_bytes": [p.stat().st_size for p in paths],
        "modality": ["audio"] * len(paths),
        "_shard": pa.array([0] * len(paths), pa.int32()),
    })


def decode_folder(folder: Path, windows_per_batch: int) -> tuple[list[pa.Table], dict[str, list[dict]]]:
    batches = list(read_and_decode_audio(items_table(sorted(folder.iterdir())), frontends=[DEFAULT_FRONTEND],
                                         windows_per_batch=windows_per_batch))
    by_file: dict[str, list[dict]] = defaultdict(list)
    for batch in batches:
        for row in batch.to_pylist():
            if row["encoded"] is not None:
                row["waveform"] = np.frombuffer(row["encoded"], dtype=np.float32)
            by_file[Path(row["uri"]).name].append(row)
    return batches, by_file


def check_coverage(rows: list[dict], data: bytes, name: str) -> None:
    assert [r["segment"] for r in rows] == list(range(len(rows))), name
    assert len(rows) == expected_windows(data), name
    assert rows[0]["start_s"] == 0.0
    assert rows[-1]["end_s"] >= duration(data) - DEFAULT_FRONTEND.hop_s, name
    assert rows[-1]["end_s"] == pytest.approx(duration(data), abs=1e-3), "the last window ends with the clip"
    starts = np.array([r["start_s"] for r in rows])
    assert np.allclose(np.diff(starts), DEFAULT_FRONTEND.hop_s), name


def test_decode_stage_windows_every_clip_and_flags_broken_files(tmp_path):
    files = audio_corpus()
    write_folder(tmp_path, files)

    batches, by_file = decode_folder(tmp_path, windows_per_batch=8)

    assert sorted(by_file) == sorted(files)
    assert all(b.num_rows <= 8 for b in batches) and len(batches) > len(files) // 2
    for name in CLIPS:
        rows = by_file[name]
        assert {r["status"] for r in rows} == {"ok"}, (name, rows[0]["error"])
        check_coverage(rows, files[name], name)
        assert all(r["waveform"].dtype == np.float32 and r["waveform"].shape == (WIDTH,) for r in rows)
        assert [r["_last"] for r in rows] == [False] * (len(rows) - 1) + [True], "only the last row ends the item"
    for name, status in BROKEN.items():
        [row] = by_file[name]
        assert (row["segment"], row["status"]) == (0, status), (name, row["error"])
        assert row["error"] and row["start_s"] is None and row["_last"]
    assert "truncated WAV" in by_file["truncated.wav"][0]["error"]
    assert "not a sound file" in by_file["text.flac"][0]["error"]


def test_resampled_and_mixed_down_content_is_right(tmp_path):
    rate, hz = 44_100, 1000.0
    t = np.arange(rate * 2) / rate
    tone = np.sin(2 * np.pi * hz * t)
    stereo = np.stack([0.8 * tone, 0.2 * tone], axis=1).astype(np.float32)
    sf.write(tmp_path / "tone.flac", stereo, rate, subtype="PCM_24")

    [first, *_] = item_windows(str(tmp_path / "tone.flac"), DEFAULT_FRONTEND, hold=4)

    spectrum = np.abs(np.fft.rfft(first.waveform))
    assert np.fft.rfftfreq(WIDTH, 1 / RATE)[spectrum.argmax()] == pytest.approx(hz, abs=1.0)
    assert np.abs(first.waveform).max() == pytest.approx(0.5, abs=0.01), "mono is the channel average"


def test_non_finite_samples_flag_only_their_windows(tmp_path):
    wave = signal("tone", 16_000, 4.0, 2)
    wave[20_000:20_010, 1] = np.nan
    wave[20_010, 0] = np.inf
    sf.write(tmp_path / "nan.wav", wave, 16_000, subtype="FLOAT")

    rows = list(item_windows(str(tmp_path / "nan.wav"), DEFAULT_FRONTEND, hold=4))

    bad = {w.segment: w.error for w in rows if w.status.value != "ok"}
    assert len(rows) == 7 and sorted(bad) == [1, 2], "1.25 s lies in the windows starting at 0.5 s and 1.0 s"
    assert all(e.startswith("11 non-finite samples") for e in bad.values())
    assert all(np.isfinite(w.waveform).all() for w in rows)


def test_failure_part_way_keeps_passed_windows_and_adds_one_row(tmp_path):
    whole = encode("noise", 16_000, 30.0, 1, "FLAC", "PCM_16")
    (tmp_path / "cut.flac").write_bytes(whole[: len(whole) * 2 // 3])

    late = list(item_windows(str(tmp_path / "cut.flac"), DEFAULT_FRONTEND, hold=8))
    early = list(item_windows(str(tmp_path / "cut.flac"), DEFAULT_FRONTEND, hold=1000))

    *kept, last = late
    assert len(kept) > 8 and all(w.status.value == "ok" for w in kept)
    assert [w.segment for w in late] == list(range(len(late)))
    assert last.status.value == "decode_error" and "windows, which were kept" in last.error
    [only] = early
    assert (only.segment, only.status.value) == (0, "decode_error") and "decoding failed at" in only.error


def test_decode_memory_stays_flat_on_a_long_file(tmp_path):
    """Short version of bench/audio_memory.py: 8 min peaks like 1 min (tracemalloc, numpy included)."""
    peaks = {}
    for minutes in (1, 8):
        path = tmp_path / f"{minutes}min.wav"
        with sf.SoundFile(path, "w", samplerate=22_050, channels=2, subtype="PCM_16") as out:
            for second in range(minutes * 60):
                out.write(signal("chirp", 22_050, 1.0, 2, seed=second))
        tracemalloc.start()
        windows = sum(b.num_rows for b in read_and_decode_audio(items_table([path]), frontends=[DEFAULT_FRONTEND]))
        peaks[minutes] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert windows == 2 * minutes * 60 - 1

    assert peaks[8] < 1.2 * peaks[1], peaks


def rows_by_file(table: pa.Table, marker: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = defaultdict(list)
    for row in sorted(table.to_pylist(), key=lambda r: (r["uri"], r["segment"])):
        found[row["uri"].rsplit(marker, 1)[1]].append(row)
    return found


@pytest.mark.usefixtures("ray_local")
def test_audio_run_on_a_local_folder(tmp_path):
    files = audio_corpus()
    write_folder(tmp_path / "in", files)
    output = str(tmp_path / "out")

    result = run(RunConfig(inputs=(str(tmp_path / "in"),), output=output, model="ghostnetv2_100",
                           weights="random", num_classes=7, modality="audio", max_error_rate=0.5))

    assert result.committed and result.items == len(files)
    table = committed(output)
    assert table.num_rows == result.rows == sum(expected_windows(files[n]) for n in CLIPS) + len(BROKEN)
    rows = rows_by_file(table, "/in/")
    for name in CLIPS:
        assert {r["status"] for r in rows[name]} == {"ok"}
        assert [r["segment"] for r in rows[name]] == list(range(expected_windows(files[name])))
        first = rows[name][0]
        assert first["modality"] == "audio" and first["label"] in {str(i) for i in range(7)}
        assert len(first["topk_ids"]) == 5 and first["channel_weights"]
    for name, status in BROKEN.items():
        assert [(r["segment"], r["status"]) for r in rows[name]] == [(0, status)]
    [record] = run_records(output)
    assert record.modality == "audio" and record.model == "ghostnetv2_100"
    con = views.connect(output)
    assert con.execute("SELECT DISTINCT count FROM channel_stats").fetchall() == [(record.rows_per_status["ok"],)]
    images_only = con.execute("SELECT count(*) FROM predictions WHERE modality = 'image'").fetchone()
    nulls = con.execute("SELECT count(*) FROM predictions WHERE start_s IS NULL").fetchone()
    assert images_only == (0,) and nulls == (len(BROKEN),), "only rows that are not a window have no times"


@pytest.mark.usefixtures("ray_local")
def test_auto_mode_on_s3_commits_one_run_per_modality(s3fs_client, bucket):
    sounds = {
        "a/tone.wav": encode("tone", 48_000, 2.6, 2, "WAV", "PCM_16"),
        "a/chirp.ogg": encode("chirp", 22_050, 1.2, 1, "OGG", "VORBIS"),
        "a/short.flac": encode("noise", 8_000, 0.3, 6, "FLAC", "PCM_16"),
        "a/bad.wav": b"RIFF not really",
    }
    images = {
        "p/g0.jpg": corpus.encode(corpus.gradient(80, 60, 0), "JPEG"),
        "p/g1.png": corpus.encode(corpus.gradient(50, 70, 1), "PNG"),
        "p/bad.jpg": b"not a jpeg",
    }
    for name, data in {**sounds, **images, "notes.txt": b"not an item"}.items():
        s3fs_client.pipe_file(f"{bucket}/in/{name}", data)
    config = RunConfig(inputs=(f"s3://{bucket}/in",), output=f"s3://{bucket}/out", model="ghostnet_050",
                       weights="random", num_classes=3, modality="auto", audio_model="ghostnet_050",
                       max_error_rate=0.5, run_id="media-1")

    results = run_by_modality(config)
    again = run_by_modality(config)

    assert [r.committed for r in results] == [True, True]
    assert [r.run_id for r in results] == ["media-1-image", "media-1-audio"]
    assert [(r.items, r.items_skipped) for r in again] == [(0, 3), (0, 4)]
    assert [(r.modality, r.items) for r in results] == [("image", 3), ("audio", 4)]
    table = committed(f"s3://{bucket}/out")
    rows = rows_by_file(table, "/in/")
    assert sorted(rows) == sorted([*sounds, *images])
    expected_rows = len(images) + 1 + sum(expected_windows(d) for n, d in sounds.items() if n != "a/bad.wav")
    assert table.num_rows == expected_rows
    assert {r["run_id"] for n in images for r in rows[n]} == {"media-1-image"}
    assert {r["run_id"] for n in sounds for r in rows[n]} == {"media-1-audio"}
    assert [r["status"] for r in rows["a/bad.wav"]] == ["decode_error"]
    assert [r["segment"] for r in rows["a/tone.wav"]] == [0, 1, 2, 3, 4], "2.6 s: starts 0, 0.5, .., 2.0"


def test_cli_audio_model_flags_belong_to_auto_mode():
    parser = COMMAND.build_parser()
    base = ["--input", "in", "--output", "out", "--model", "ghostnet_050"]

    auto = config_from_args(parser.parse_args([*base, "--modality", "auto", "--audio-model", "ghostnetv2_100",
                                               "--audio-weights", "s3://m/a.safetensors"]))
    audio = auto.for_modality("audio")

    assert (audio.modality, audio.model, audio.weights) == ("audio", "ghostnetv2_100", "s3://m/a.safetensors")
    assert auto.for_modality("image").model == "ghostnet_050"
    with pytest.raises(UsageError, match="are for --modality auto"):
        config_from_args(parser.parse_args([*base, "--modality", "audio", "--audio-model", "ghostnet_050"]))
    with pytest.raises(UsageError, match="give --audio-model"):
        config_from_args(parser.parse_args([*base, "--modality", "auto"])).for_modality("audio")


def test_missing_audio_object_is_a_read_error(tmp_path):
    [row] = item_windows(os.fspath(tmp_path / "gone.wav"), DEFAULT_FRONTEND, hold=4)

    assert (row.segment, row.status.value) == (0, "read_error") and "not found" in row.error

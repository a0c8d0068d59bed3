"""The audio input kind (:data:`pipeline.kinds.KINDS`): audio objects to fixed-length mono windows at
the model's rate (the decode stage), and those windows to log-mel images on the model actor
(:data:`FRONT_END`).

A file is streamed, never held whole: read in chunks through fsspec, mixed to mono (the plain
average of all channels), resampled with a streaming soxr resampler, and cut into windows of
``window_s`` every ``hop_s``. Windows cover the whole clip: one window for a clip no longer
than a window, else ``ceil((duration - window) / hop) + 1``, the last one zero-padded; a row's
``end_s`` is where the audio in its window ends (the clip's duration for the last window).

What an item's rows say when something is wrong:

- Cannot be read, not audio, truncated (the header declares more audio data than the file
  holds) or no samples: one row, segment 0, with ``read_error``, ``decode_error`` or ``empty``.
- Decoding fails part-way: a file's windows are held back until ``windows_per_batch`` of them
  exist, so a failure before that (always, for clips shorter than that) also gives the single
  segment-0 row. After that, the windows already passed on stay, and one ``decode_error`` row
  at the next segment says where decoding stopped.
- Non-finite samples (NaN/inf, possible in float files): each window containing any is a
  ``decode_error`` row naming how many, and is not labeled; windows without any are labeled as
  usual. The samples are zeroed before resampling, so the resampler's filter cannot spread
  them into neighbouring windows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import soundfile as sf
import soxr
import torch

from ghostnet import AudioFrontend, LogMel, ModelMeta
from ghostnet.audio import hop_samples, window_samples
from ghostnet.transforms import to_device
from pipeline import storage
from pipeline.config import RunConfig
from pipeline.errors import InternalError
from pipeline.kinds import Decoder, FrontEnd
from pipeline.metrics import Reporter
from pipeline.rows import decoded_rows
from pipeline.schema import ITEMS, MODELS, SHARD, Status

DEFAULT_WINDOWS_PER_BATCH = 64
READ_FRAMES = 1 << 15
READ_BLOCK_BYTES = 4 << 20
# libsndfile's header log reports a data chunk longer than the file as "data : N (should be M)".
_SHORT_DATA_CHUNK = re.compile(r"^\s*(data|SSND) : (\d+) \(should be (\d+)\)", re.MULTILINE)
# Length fields that streaming writers leave as "unknown"; such a file is not truncated.
_UNKNOWN_LENGTHS = frozenset({0xFFFFFFFF, 0x7FFFFFFF})


@dataclass(frozen=True)
class Window:
    """One output row of an audio item: a window, or the row that flags a failed item."""

    segment: int
    status: Status
    error: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    waveform: np.ndarray | None = None


class _Failed(Exception):
    """This item cannot be decoded (any further)."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_and_decode_audio(
    batch: pa.Table,
    *,
    frontends: list[AudioFrontend],
    windows_per_batch: int = DEFAULT_WINDOWS_PER_BATCH,
    reporter: Reporter | None = None,
) -> Iterator[pa.Table]:
    """The decode stage (Ray tasks): items in, tables of at most ``windows_per_batch`` rows of
    :data:`pipeline.schema.DECODED` out, each window's float32 samples as its ``encoded`` bytes.
    ``frontends``: one per decode group of the run (models with the same rate, window and hop share
    one); an item gives each group its windows, read once per group.

    A generator, so that one long file becomes many small blocks instead of one huge one.
    ``reporter`` gets the seconds spent between yields as decoding (audio streams its bytes while it
    decodes, so its fetching counts as decoding).
    """
    rows: list[tuple[dict[str, Any], Window, bool, int]] = []
    started = time.perf_counter()
    columns = [*ITEMS.names, SHARD, *([MODELS] if MODELS in batch.column_names else [])]
    for item in batch.select(columns).to_pylist():
        for window, last, group in _item_rows(item, frontends, windows_per_batch):
            rows.append((item, window, last, group))
            if len(rows) == windows_per_batch:
                table = _to_table(rows)
                _report(reporter, started)
                yield table
                started = time.perf_counter()
                rows = []
    if rows:
        table = _to_table(rows)
        _report(reporter, started)
        yield table
    else:
        _report(reporter, started)


def _item_rows(item: dict[str, Any], frontends: list[AudioFrontend],
               hold: int) -> Iterator[tuple[Window, bool, int]]:
    """Every row of one item, group after group, each marked whether it is the last of its group."""
    for group, frontend in enumerate(frontends):
        windows = item_windows(item["uri"], frontend, hold=hold, size=item["size_bytes"], etag=item["etag"])
        for window, last in _marking_last(windows):
            yield window, last, group


def decode_key(meta: ModelMeta) -> tuple[object, ...]:
    """What the decoded windows depend on (the log-mel is made on the actor, per model)."""
    frontend = _frontend(meta)
    return (frontend.sample_rate, frontend.window_s, frontend.hop_s)


def _report(reporter: Reporter | None, started: float) -> None:
    if reporter is not None:
        reporter.stage("decode", time.perf_counter() - started)


def _marking_last(windows: Iterator[Window]) -> Iterator[tuple[Window, bool]]:
    """Each row with whether it is its item's last, one window behind the decoder."""
    previous = None
    for window in windows:
        if previous is not None:
            yield previous, False
        previous = window
    if previous is not None:
        yield previous, True


def item_windows(uri: str, frontend: AudioFrontend, *, hold: int, size: int | None = None,
                 etag: str | None = None) -> Iterator[Window]:
    """Every row of one item, holding back its first ``hold`` windows (see the module docstring);
    read as the version ``etag`` names, when given."""
    held: list[Window] = []
    passed = 0
    try:
        for window in _decoded_windows(uri, frontend, size, etag):
            held.append(window)
            if passed or len(held) == hold:
                passed += len(held)
                yield from held
                held = []
    except Exception as exc:  # noqa: BLE001 - a bad item is a row, never a failed task
        status, message = _describe(exc)
        if passed:
            message = f"decoding stopped after {passed} windows, which were kept: {message}"
        yield Window(passed, status, message)
        return
    yield from held


def _describe(exc: Exception) -> tuple[Status, str]:
    if isinstance(exc, _Failed):
        return exc.status, str(exc)
    if storage.is_precondition_failure(exc):
        return Status.READ_ERROR, storage.CHANGED
    if isinstance(exc, FileNotFoundError):
        return Status.READ_ERROR, "object not found (deleted or moved after listing)"
    if isinstance(exc, MemoryError):
        return Status.TOO_LARGE, "decoding ran out of memory"
    if isinstance(exc, OSError):
        return Status.READ_ERROR, storage.redact(f"{type(exc).__name__}: {exc}")
    return Status.DECODE_ERROR, storage.redact(f"{type(exc).__name__}: {exc}")


def _decoded_windows(uri: str, frontend: AudioFrontend, size: int | None, etag: str | None) -> Iterator[Window]:
    if size == 0:
        raise _Failed(Status.EMPTY, "zero-byte file")
    with _opened(uri, etag) as stream, _sound_file(stream) as sound:
        yield from _cut(_mono_chunks(sound, frontend.sample_rate), frontend)


@contextmanager
def _opened(uri: str, etag: str | None) -> Iterator[IO[bytes]]:
    fs, path = storage.filesystem(uri)
    storage.check_version(uri, etag)
    with storage.with_retries(lambda: fs.open(path, "rb", block_size=READ_BLOCK_BYTES)) as stream:
        storage.pin_stream(stream, etag)
        if not stream.read(1):
            raise _Failed(Status.EMPTY, "zero-byte file")
        stream.seek(0)
        yield stream


@contextmanager
def _sound_file(stream: IO[bytes]) -> Iterator[sf.SoundFile]:
    try:
        sound = sf.SoundFile(stream)
    except sf.LibsndfileError as err:
        raise _Failed(Status.DECODE_ERROR, f"not a sound file libsndfile can read ({err.error_string})") from err
    with sound:
        _check_not_truncated(sound)
        yield sound


def _check_not_truncated(sound: sf.SoundFile) -> None:
    for _, declared, present in _SHORT_DATA_CHUNK.findall(sound.extra_info):
        if int(declared) > int(present) and int(declared) not in _UNKNOWN_LENGTHS:
            raise _Failed(
                Status.DECODE_ERROR,
                f"truncated {sound.format} file: the header declares {int(declared)} bytes of audio, "
                f"the file holds {int(present)}",
            )


def _mono_chunks(sound: sf.SoundFile, rate: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Mono float32 chunks at ``rate``, each with the output positions of non-finite input samples."""
    resampler = None if sound.samplerate == rate else soxr.ResampleStream(sound.samplerate, rate, 1, dtype="float32")
    frames_read = 0
    while True:
        try:
            block = sound.read(READ_FRAMES, dtype="float32", always_2d=True)
        except sf.LibsndfileError as err:
            at = frames_read / sound.samplerate
            raise _Failed(Status.DECODE_ERROR, f"decoding failed at {at:.2f} s: {err.error_string}") from err
        mono = np.ascontiguousarray(block.mean(axis=1, dtype=np.float32))
        bad = np.flatnonzero(~np.isfinite(mono))
        mono[bad] = 0.0
        positions = ((frames_read + bad) * rate) // sound.samplerate
        frames_read += len(mono)
        last = len(mono) == 0
        yield (mono if resampler is None else resampler.resample_chunk(mono, last=last)), positions
        if last:
            return


def _cut(chunks: Iterator[tuple[np.ndarray, np.ndarray]], frontend: AudioFrontend) -> Iterator[Window]:
    """Windows of ``window_s`` every ``hop_s`` over the whole stream; the last one zero-padded."""
    width, step, rate = window_samples(frontend), hop_samples(frontend), frontend.sample_rate
    pending = np.zeros(0, dtype=np.float32)  # samples from the next window's start on
    start = 0  # stream position of pending[0]
    bad = np.zeros(0, dtype=np.int64)  # stream positions of zeroed non-finite samples
    total = 0
    segment = 0
    for samples, positions in chunks:
        pending = np.concatenate([pending, samples])
        bad = np.concatenate([bad, positions])
        total += len(samples)
        while len(pending) >= width:
            yield _window(segment, start, pending[:width].copy(), bad, rate, end=start + width)
            segment += 1
            pending, start = pending[step:], start + step
            bad = bad[bad >= start]
    if total == 0:
        raise _Failed(Status.EMPTY, "no audio samples")
    if segment == 0 or start - step + width < total:
        padded = np.zeros(width, dtype=np.float32)
        padded[: len(pending)] = pending
        yield _window(segment, start, padded, bad, rate, end=total)


def _window(segment: int, start: int, waveform: np.ndarray, bad: np.ndarray, rate: int, *, end: int) -> Window:
    inside = int(np.count_nonzero((bad >= start) & (bad < start + len(waveform))))
    if inside:
        status, error = Status.DECODE_ERROR, f"{inside} non-finite samples (NaN/inf) in this window; not labeled"
    else:
        status, error = Status.OK, None
    return Window(segment, status, error, start / rate, end / rate, waveform)


def _to_table(rows: list[tuple[dict[str, Any], Window, bool, int]]) -> pa.Table:
    windows = [w for _, w, _, _ in rows]
    return decoded_rows(
        {name: [item[name] for item, _, _, _ in rows] for name in rows[0][0]},
        segment=[w.segment for w in windows],
        start_s=[w.start_s for w in windows],
        end_s=[w.end_s for w in windows],
        status=[w.status.value for w in windows],
        error=[w.error for w in windows],
        encoding=["raw" if w.waveform is not None else None for w in windows],
        encoded=[None if w.waveform is None else w.waveform.astype(np.float32).tobytes() for w in windows],
        last=[last for _, _, last, _ in rows],
        group=pa.array([group for _, _, _, group in rows], pa.int32()),
    )


def raw_waveforms(encoded: list[bytes], meta: ModelMeta) -> np.ndarray:
    """Windows travelled as float32 bytes (``encoding`` ``raw``), as one (n, samples) array."""
    samples = window_samples(_frontend(meta))
    return np.frombuffer(bytearray(b"".join(encoded)), dtype=np.float32).reshape(len(encoded), samples)


def decode_stage(config: RunConfig, metas: list[ModelMeta], *,
                 on_device: bool) -> tuple[Callable[..., Any], dict[str, Any]]:
    """:func:`read_and_decode_audio` at each decode group's front end (rate, window, hop); audio
    always decodes in the tasks."""
    return read_and_decode_audio, {"frontends": [_frontend(meta) for meta in metas]}


def model_input(meta: ModelMeta, min_size: int, device: torch.device,
                dtype: torch.dtype) -> Callable[[np.ndarray | torch.Tensor], torch.Tensor]:
    """Waveform windows to log-mel images on ``device``, the time axis padded up to ``min_size``."""
    log_mel = LogMel(meta, min_frames=min_size).to(device)

    def spectrogram(waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
        x: torch.Tensor = log_mel(to_device(torch.as_tensor(waveform), device))
        return x.to(dtype).contiguous(memory_format=torch.channels_last)

    return spectrogram


def zero_windows(meta: ModelMeta, rows: int) -> np.ndarray:
    return np.zeros((rows, window_samples(_frontend(meta))), np.float32)


def _frontend(meta: ModelMeta) -> AudioFrontend:
    if meta.audio is None:
        raise InternalError(f"{meta.architecture} has no audio front end: it is not an audio model")
    return meta.audio


DECODER: Decoder = decode_stage
FRONT_END = FrontEnd(host_inputs=raw_waveforms, model_input=model_input, example_input=zero_windows,
                     decode_key=decode_key)

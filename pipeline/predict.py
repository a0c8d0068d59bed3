"""The model stage: a Ray Data callable class, one per actor, model loaded once in ``__init__``.

``__call__`` maps a decoded batch to prediction rows (:data:`pipeline.schema.PREDICTIONS`).
Rows whose decode failed pass through with their status; ``ok`` rows run through GhostNet in
one forward pass that also yields the channel weights. Each batch's per-channel partial sums
go to the run's staging area under a name derived from the batch's items, so a retried batch
overwrites its own file instead of adding a second one.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import ghostnet
from pipeline import decode, storage
from pipeline.schema import CHANNEL_PARTIALS, CHANNEL_WEIGHT, PREDICTIONS, Status

RANDOM = "random"
log = logging.getLogger("ghostnet_pipeline")


@dataclass(frozen=True)
class ModelSpec:
    """What an actor needs to load the model itself: names and a URI, never the tensors."""

    name: str
    weights: str | None = None  # URI, "random", or None for random weights with seed 0
    weights_sha256: str | None = None
    seed: int = 0
    num_classes: int | None = None
    in_chans: int | None = None
    modality: str = "image"

    @property
    def is_random(self) -> bool:
        return self.weights in (None, RANDOM)

    def provenance(self) -> str:
        """The ``weights_sha256`` column value: the file's digest, or the random seed."""
        if self.is_random:
            return f"random-seed-{self.seed}"
        if self.weights_sha256 is None:
            raise ValueError("resolve the weights digest before building the model stage")
        return self.weights_sha256

    def load(self) -> torch.nn.Module:
        kwargs: dict[str, int | str] = {"modality": self.modality}
        if self.num_classes is not None:
            kwargs["num_classes"] = self.num_classes
        if self.in_chans is not None:
            kwargs["in_chans"] = self.in_chans
        if self.is_random:
            model = ghostnet.create_model(self.name, **kwargs)
            ghostnet.init_random(model, self.seed)
        else:
            model = ghostnet.create_model(
                self.name, weights=self.weights, weights_sha256=self.weights_sha256, **kwargs
            )
        return model


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def model_input(
    meta: ghostnet.ModelMeta, min_size: int, device: torch.device, dtype: torch.dtype
) -> tuple[str, Callable[[np.ndarray], torch.Tensor]]:
    """The decoded column a model reads, and how a batch of it becomes the model's input.

    Images: uint8 pixels, normalised. Audio: waveform windows, log-mel on ``device``, the time
    axis padded up to ``min_size``.
    """
    if meta.modality == "image":
        return "pixels", partial(ghostnet.normalize, meta=meta, device=device, dtype=dtype, channels_last=True)
    log_mel = ghostnet.LogMel(meta, min_frames=min_size).to(device)

    def spectrogram(waveform: np.ndarray) -> torch.Tensor:
        x = log_mel(ghostnet.transforms.to_device(torch.as_tensor(waveform), device))
        return x.to(dtype).contiguous(memory_format=torch.channels_last)

    return "waveform", spectrogram


class Predictor:
    """Runs GhostNet on decoded batches; Ray Data builds one per actor."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        run_id: str,
        partials_uri: str,
        topk: int = 5,
        embeddings: bool = False,
        torch_threads: int | None = None,
        decode_on_device: bool = False,
        max_pixels: int = decode.DEFAULT_MAX_PIXELS,
        compile: bool = False,
        batch_size: int | None = None,
    ) -> None:
        """``compile``: run batches through ``torch.compile`` (inductor) of the model, compiled here
        for ``batch_size`` rows (the batch size Ray Data gives this actor; None: 256 on a GPU, 32 on
        a CPU, as ``pipeline.run`` picks). Where compiling fails, the actor runs eager and says why.
        """
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = pick_device()
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        model = spec.load()
        self.meta: ghostnet.ModelMeta = model.meta
        self.input_column, self.to_input = model_input(self.meta, model.min_input_size, self.device, self.dtype)
        self.labels = list(self.meta.labels)
        self.label_array = pa.array(self.labels, pa.string())
        model = ghostnet.for_inference(model).to(self.device)
        self.model = model.to(memory_format=torch.channels_last, dtype=self.dtype)
        self.model_name = spec.name
        self.weights_id = spec.provenance()
        self.run_id = run_id
        self.partials_uri = partials_uri
        self.topk = min(topk, len(self.labels))
        self.embeddings = embeddings
        self.decode_on_device = decode_on_device and self.meta.modality == "image"
        self.max_pixels = max_pixels
        self.batch_size = batch_size or (256 if self.device.type == "cuda" else 32)
        self._compiled: Callable[[torch.Tensor], ghostnet.InferenceOutput] | None = None
        if compile:
            self._compiled = self._compile()

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        n = len(batch["uri"])
        status = [str(s) for s in batch["status"]]
        error = [None if e is None else str(e) for e in batch["error"]]
        ok = [i for i in range(n) if status[i] == Status.OK.value]
        if ok and self.decode_on_device:
            inputs, ok = self._decode_encoded(batch, ok, status, error)
        elif ok:
            inputs = np.asarray(batch[self.input_column])[ok]
        predicted = self._predict(inputs, ok, batch, status, error) if ok else _Predicted.none()
        return self._rows(batch, status, error, predicted)

    def _decode_encoded(self, batch, ok, status, error) -> tuple[torch.Tensor, list[int]]:
        """Decode the rows left encoded on this actor's device; rows that fail get their status."""
        decoded = decode.decode_on_device(
            [batch["encoded"][i] for i in ok], [str(batch["encoding"][i]) for i in ok],
            self.meta, self.device, max_pixels=self.max_pixels,
        )
        kept = []
        for i, d in zip(ok, decoded, strict=True):
            if d.pixels is None:
                status[i], error[i] = d.status.value, d.error
            else:
                kept.append(d.pixels)
        survivors = [i for i, d in zip(ok, decoded, strict=True) if d.pixels is not None]
        return (torch.stack(kept) if kept else torch.empty(0)), survivors

    @torch.inference_mode()
    def _predict(self, inputs, ok, batch, status, error) -> _Predicted:
        """``inputs[j]`` is the decoded input of row ``ok[j]``."""
        try:
            outputs, rows = [self._forward(inputs)], ok
        except Exception:  # noqa: BLE001 - one bad item must not take its batch down: retry singly
            outputs, rows = self._forward_one_by_one(inputs, ok, status, error)
        if not rows:
            return _Predicted.none()
        output = ghostnet.InferenceOutput.cat(outputs)
        gates, embedding = output.channel_weights, output.embedding
        self._write_partials([self._key(batch, i) for i in rows], gates)
        probs = torch.softmax(output.logits.float(), dim=1)
        scores, ids = probs.topk(self.topk, dim=1)
        return _Predicted(
            rows=rows,
            topk_ids=ids.cpu().numpy().astype(np.int32),
            topk_scores=scores.cpu().numpy(),
            embedding=None if embedding is None else embedding.float().cpu().numpy(),
            channel_weights=summarize_channel_weights(gates),
        )

    def _forward_one_by_one(self, inputs, ok, status, error) -> tuple[list[ghostnet.InferenceOutput], list[int]]:
        outputs, rows = [], []
        for j, i in enumerate(ok):
            try:
                outputs.append(self._forward(inputs[j : j + 1]))
                rows.append(i)
            except Exception as exc:  # noqa: BLE001 - this item's model_error, the others go on
                status[i] = Status.MODEL_ERROR.value
                error[i] = f"{type(exc).__name__}: {exc}"
        return outputs, rows

    def _forward(self, inputs: np.ndarray | torch.Tensor) -> ghostnet.InferenceOutput:
        x = self.to_input(inputs)
        if self._compiled is not None and len(x) > 1:
            return self._forward_compiled(x)
        return self.model.forward_all(x, embeddings=self.embeddings)

    def _compile(self) -> Callable[[torch.Tensor], ghostnet.InferenceOutput] | None:
        """The compiled forward, built and run once here so the cost is paid (and logged) at start.

        One graph with a static batch of ``self.batch_size`` rows; shorter batches are padded up to
        it (see ``_forward_compiled``). Measured on a 2-core CPU with ghostnet_050, batch 32: a graph
        with a dynamic batch dimension took 28.5 s to compile against 11 s for the static one (2
        threads, warm inductor cache; 161 s cold), 94 s against 55 s at 1 thread, and ran at the
        same speed within this shared machine's noise (279 vs 299 ms per batch, 1 thread); it would
        also recompile for a batch of one. Padding wastes at most one batch of compute per short
        batch, which Ray Data gives at the end of a run or where decode failures removed rows.
        """
        # A copy of the model carries the hooks that the traced forward keeps for good, so the
        # eager model (single-item retries) leaves no captured gates behind for the graph's guards.
        traced = ghostnet.channel_weights.traceable_forward_all(copy.deepcopy(self.model), embeddings=self.embeddings)
        started = time.perf_counter()
        try:
            compiled = torch.compile(traced, fullgraph=True, dynamic=False)
            with torch.inference_mode():
                compiled(self._example_input())
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
        except Exception as exc:  # noqa: BLE001 - no compiler, unsupported op, ...: run eager, never a dead actor
            log.warning(
                "torch.compile of %s failed after %.1f s, running eager instead: %s: %s",
                self.model_name, time.perf_counter() - started, type(exc).__name__, str(exc).strip()[:500],
            )
            return None
        log.info(
            "torch.compile of %s for batches of %d on %s took %.1f s",
            self.model_name, self.batch_size, self.device, time.perf_counter() - started,
        )
        return compiled

    def _example_input(self) -> torch.Tensor:
        """A batch of zeros through the same input path as real batches (same dtype, layout, strides)."""
        if self.meta.modality == "image":
            _, height, width = self.meta.input_size
            decoded = np.zeros((self.batch_size, height, width, self.meta.in_chans), np.uint8)
        else:
            decoded = np.zeros((self.batch_size, ghostnet.audio.window_samples(self.meta.audio)), np.float32)
        return self.to_input(decoded)

    def _forward_compiled(self, x: torch.Tensor) -> ghostnet.InferenceOutput:
        """The compiled graph on ``x`` in pieces of ``batch_size`` rows, the last one padded with zeros."""
        size, pieces = self.batch_size, []
        for start in range(0, len(x), size):
            piece = x[start : start + size]
            n = len(piece)
            if n < size:
                padded = torch.zeros((size, *piece.shape[1:]), dtype=piece.dtype, device=piece.device)
                padded = padded.contiguous(memory_format=torch.channels_last)
                padded[:n] = piece
                piece = padded
            pieces.append(self._compiled(piece).head(n))
        return pieces[0] if len(pieces) == 1 else ghostnet.InferenceOutput.cat(pieces)

    def _rows(self, batch, status: list[str], error: list[str | None], predicted: _Predicted) -> pa.Table:
        """One output row per input row, built column by column (no per-row Python objects)."""
        n = len(status)
        now = datetime.now(timezone.utc)
        where = _positions(predicted.rows, n)
        k = self.topk
        ids = pa.array(predicted.topk_ids.reshape(-1), pa.int32())
        labels = self.label_array.take(ids)
        columns = {
            "uri": pa.array([str(u) for u in batch["uri"]], pa.string()),
            "etag": pa.array([None if e is None else str(e) for e in batch["etag"]], pa.string()),
            "size_bytes": pa.array(_nullable_ints(batch["size_bytes"]), pa.int64()),
            "modality": pa.array([str(m) for m in batch["modality"]], pa.string()),
            "segment": pa.array(np.asarray(batch["segment"], dtype=np.int32)),
            "start_s": pa.array(_nullable_floats(batch["start_s"]), pa.float32()),
            "end_s": pa.array(_nullable_floats(batch["end_s"]), pa.float32()),
            "status": pa.array(status, pa.string()),
            "error": pa.array(error, pa.string()),
            "label": labels.take(pa.array(np.arange(len(predicted.rows)) * k)).take(where),
            "score": pa.array(predicted.topk_scores[:, 0], pa.float32()).take(where),
            "topk_ids": _lists(ids, k).take(where),
            "topk_labels": _lists(labels, k).take(where),
            "topk_scores": _lists(pa.array(predicted.topk_scores.reshape(-1), pa.float32()), k).take(where),
            "embedding": (
                _lists(pa.array(predicted.embedding.reshape(-1), pa.float32()), predicted.embedding.shape[1])
                .take(where)
                if predicted.embedding is not None
                else pa.nulls(n, pa.list_(pa.float32()))
            ),
            "channel_weights": _channel_weight_lists(predicted.channel_weights).take(where),
            "model": pa.array([self.model_name] * n, pa.string()),
            "weights_sha256": pa.array([self.weights_id] * n, pa.string()),
            "run_id": pa.array([self.run_id] * n, pa.string()),
            "processed_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        }
        return pa.table(columns, schema=PREDICTIONS)

    @staticmethod
    def _key(batch, i: int) -> str:
        return f"{batch['uri'][i]}#{int(batch['segment'][i])}"

    def _write_partials(self, keys: list[str], channel_weights: dict[str, torch.Tensor]) -> None:
        digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]
        table = channel_partials(channel_weights)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        storage.write_bytes(storage.join(self.partials_uri, f"{digest}.parquet"), sink.getvalue())


@dataclass(frozen=True)
class _Predicted:
    """Model outputs for the rows that reached the model, in ``rows`` order, on the host."""

    rows: list[int]
    topk_ids: np.ndarray  # (m, k) int32
    topk_scores: np.ndarray  # (m, k) float32
    embedding: np.ndarray | None  # (m, d) float32
    channel_weights: dict[str, dict[str, np.ndarray]]  # layer -> statistic -> (m,)

    @classmethod
    def none(cls) -> _Predicted:
        return cls([], np.zeros((0, 1), np.int32), np.zeros((0, 1), np.float32), None, {})


def _positions(rows: list[int], n: int) -> pa.Array:
    """For each of ``n`` rows, its index among ``rows``, or null: ``take`` then scatters."""
    where = np.full(n, -1, dtype=np.int64)
    where[rows] = np.arange(len(rows))
    return pa.array(where, mask=where < 0)


def _lists(values: pa.Array, width: int) -> pa.ListArray:
    offsets = pa.array(np.arange(0, len(values) + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values)


def _channel_weight_lists(summaries: dict[str, dict[str, np.ndarray]]) -> pa.ListArray:
    """list<struct<layer, mean, std, min, max, entropy>> with one list per item, layers in order."""
    layers = list(summaries)
    items = len(next(iter(summaries.values()))["mean"]) if layers else 0
    fields = {"layer": pa.array(np.tile(np.asarray(layers, dtype=object), items), pa.string())}
    for stat in ("mean", "std", "min", "max", "entropy"):
        matrix = np.stack([summaries[layer][stat] for layer in layers], axis=1) if layers else np.zeros((0, 0))
        fields[stat] = pa.array(matrix.reshape(-1).astype(np.float32), pa.float32())
    struct = pa.StructArray.from_arrays(list(fields.values()), fields=list(CHANNEL_WEIGHT))
    return _lists(struct, len(layers)) if layers else pa.nulls(items, pa.list_(CHANNEL_WEIGHT))


def summarize_channel_weights(channel_weights: dict[str, torch.Tensor]) -> dict[str, dict[str, np.ndarray]]:
    """Per item and layer: mean, std, min, max and entropy of the gates over channels."""
    summaries = {}
    for layer, gates in channel_weights.items():
        g = gates.float()
        p = g / g.sum(dim=1, keepdim=True).clamp_min(1e-12)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
        stats = torch.stack(
            [g.mean(1), g.std(1, unbiased=False), g.amin(1), g.amax(1), entropy], dim=1
        ).cpu().numpy()
        summaries[layer] = dict(zip(("mean", "std", "min", "max", "entropy"), stats.T, strict=False))
    return summaries


def channel_partials(channel_weights: dict[str, torch.Tensor]) -> pa.Table:
    """Per layer and channel: count, sum, sum of squares, min and max over the batch's items."""
    layers, channels, counts, sums, sum_sq, mins, maxs = [], [], [], [], [], [], []
    for layer, gates in channel_weights.items():
        g = gates.double()
        c = g.shape[1]
        layers += [layer] * c
        channels.append(np.arange(c, dtype=np.int32))
        counts.append(np.full(c, g.shape[0], dtype=np.int64))
        sums.append(g.sum(0).cpu().numpy())
        sum_sq.append((g * g).sum(0).cpu().numpy())
        mins.append(g.amin(0).float().cpu().numpy())
        maxs.append(g.amax(0).float().cpu().numpy())
    cat = np.concatenate
    return pa.table(
        {
            "layer": layers,
            "channel": cat(channels),
            "count": cat(counts),
            "sum": cat(sums),
            "sum_sq": cat(sum_sq),
            "min": cat(mins),
            "max": cat(maxs),
        },
        schema=CHANNEL_PARTIALS,
    )


def _nullable_ints(values) -> list[int | None]:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v) for v in values]


def _nullable_floats(values) -> list[float | None]:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v) for v in values]


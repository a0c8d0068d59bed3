"""The model stage: a Ray Data callable class (:class:`ModelStage`), one per actor, every model of
the run loaded once in ``__init__`` (a :class:`Predictor` each).

``__call__`` maps a decoded batch (:data:`pipeline.schema.DECODED`) to prediction rows
(:data:`pipeline.rows.ROWS`): for each decoded row, one row of each model of its decode group that
the plan marks for its item. Rows whose decode failed pass through with their status; ``ok``
rows run through each model in one forward pass that also yields the channel weights, whose
per-(shard, model) partial sums ride along with the rows to the write stage. The models run one
after another on the same decoded inputs, on the same device.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import torch

import ghostnet
from pipeline import channel_stats, decode, engine, kinds
from pipeline.config import DEFAULT_MAX_PIXELS, default_batch_size
from pipeline.errors import InternalError, UsageError
from pipeline.metrics import Reporter
from pipeline.model import ModelSpec, pick_device
from pipeline.rows import ROWS, ModelOutputs, Provenance, prediction_rows
from pipeline.schema import GROUP, MODELS, SHARD, Status

log = logging.getLogger("ghostnet_pipeline")


class Predictor:
    """Runs one GhostNet model on decoded batches: the run's model ``position`` in a
    :class:`ModelStage`, or alone (tools, benchmarks) as a callable of its own."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        run_id: str,
        position: int = 0,
        topk: int = 5,
        embeddings: bool = False,
        torch_threads: int | None = None,
        decode_on_device: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        compile: bool = False,
        batch_size: int | None = None,
        reporter: Reporter | None = None,
        engine_name: str | None = None,
    ) -> None:
        """``engine_name``: ``torch``, ``compile`` or ``onnx`` (``pipeline.engine``; None: the
        default for this actor's device). ``compile`` (or ``compile=True``): batches run through
        ``torch.compile`` (inductor) of the model, compiled here for ``batch_size`` rows (the batch
        size Ray Data gives this actor; None: the default for its device,
        ``config.default_batch_size``). ``onnx``: through ONNX Runtime on the model exported here
        (or read from the local cache). Where compiling or exporting fails, the actor runs eager
        torch and says why. ``reporter``: where each batch's latency, statuses and device memory
        are reported.
        """
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = pick_device()
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.engine = "compile" if compile else engine.resolve(engine_name, on_gpu=self.device.type == "cuda")
        model = spec.load()
        if model.meta is None:
            raise InternalError(f"{spec.name} was built without its metadata (labels, preprocessing)")
        self.meta: ghostnet.ModelMeta = model.meta
        # The front end of the model's modality: how decoded rows become its input tensor.
        self.front_end = kinds.kind_of(self.meta.modality).front_end()
        self.to_input = self.front_end.model_input(self.meta, model.min_input_size, self.device, self.dtype)
        self.labels = pa.array(list(self.meta.labels), pa.string())
        model = ghostnet.for_inference(model).to(self.device)
        self.model = model.to(dtype=self.dtype).to(memory_format=torch.channels_last)
        self.model_name = spec.name
        self.position = position
        self.provenance = Provenance(spec.name, spec.identity(), run_id)
        self.topk = min(topk, len(self.labels))
        self.embeddings = embeddings
        self.decode_on_device = decode_on_device and self.front_end.device_decode
        self.max_pixels = max_pixels
        self.batch_size = batch_size or default_batch_size(on_gpu=self.device.type == "cuda")
        self.reporter = reporter
        self._compiled: Callable[[torch.Tensor], ghostnet.InferenceOutput] | None = None
        if self.engine == "compile":
            self._compiled = self._compile()
        elif self.engine == "onnx":
            self._compiled = self._onnx(spec)

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        status = batch["status"].to_pylist()
        error = batch["error"].to_pylist()
        inputs, ok = self.inputs(batch, status, error)
        decoded = time.perf_counter()
        rows = self.rows(batch, status, error, inputs, ok)
        if self.reporter is not None:
            decode_s = decoded - started if self.decode_on_device else 0.0
            self.reporter.model_batch(time.perf_counter() - started, status, self.device, decode_s=decode_s)
        return rows

    def rows(self, batch: pa.Table, status: list[str], error: list[str | None],
             inputs: np.ndarray | torch.Tensor | None, ok: list[int]) -> pa.Table:
        """This model's prediction rows of ``batch``, one per row, ``inputs[j]`` the decoded input of
        row ``ok[j]``; ``status`` and ``error`` get this model's errors."""
        if ok and inputs is not None:
            outputs = self._predict(inputs, ok, batch, status, error)
        else:
            outputs = ModelOutputs.none(self.topk)
        return prediction_rows(batch, status, error, outputs, labels=self.labels, provenance=self.provenance,
                               processed_at=datetime.now(timezone.utc))

    def inputs(self, batch: pa.Table, status: list[str],
               error: list[str | None]) -> tuple[np.ndarray | torch.Tensor | None, list[int]]:
        """The decoded inputs of the ``ok`` rows of ``batch``, and those rows (fewer if device
        decoding failed some: ``status`` and ``error`` say why)."""
        return self._inputs(batch, [i for i, s in enumerate(status) if s == Status.OK.value], status, error)

    def _inputs(self, batch: pa.Table, ok: list[int], status: list[str],
                error: list[str | None]) -> tuple[np.ndarray | torch.Tensor | None, list[int]]:
        """The decoded inputs of the ``ok`` rows, and those rows (fewer if device decoding failed some)."""
        if not ok:
            return None, ok
        rows = pa.array(ok, pa.int64())
        encoded = batch["encoded"].take(rows).to_pylist()
        if not self.decode_on_device:
            return self.front_end.host_inputs(encoded, self.meta), ok
        encoding = batch["encoding"].take(rows).to_pylist()
        decoded = decode.decode_on_device(encoded, encoding, self.meta, self.device, max_pixels=self.max_pixels)
        kept = []
        for i, d in zip(ok, decoded, strict=True):
            if d.pixels is None:
                status[i], error[i] = d.status.value, d.error
            else:
                kept.append(i)
        pixels = [torch.as_tensor(d.pixels) for d in decoded if d.pixels is not None]
        return (torch.stack(pixels) if pixels else None), kept

    @torch.inference_mode()
    def _predict(self, inputs: np.ndarray | torch.Tensor, ok: list[int], batch: pa.Table, status: list[str],
                 error: list[str | None]) -> ModelOutputs:
        """``inputs[j]`` is the decoded input of row ``ok[j]``."""
        try:
            outputs, rows = [self._forward(inputs)], ok
        except Exception:  # noqa: BLE001 - one bad item must not take its batch down: retry singly
            outputs, rows = self._forward_one_by_one(inputs, ok, status, error)
        if not rows:
            return ModelOutputs.none(self.topk)
        output = ghostnet.InferenceOutput.cat(outputs)
        probs = torch.softmax(output.logits.float(), dim=1)
        scores, ids = probs.topk(self.topk, dim=1)
        return ModelOutputs(
            rows=np.asarray(rows, dtype=np.int64),
            topk_ids=ids.cpu().numpy().astype(np.int32),
            topk_scores=scores.cpu().numpy(),
            embedding=None if output.embedding is None else output.embedding.float().cpu().numpy(),
            channel_weights=channel_stats.per_item(output.channel_weights),
            partials=self._partials(batch, rows, output.channel_weights),
        )

    def _partials(self, batch: pa.Table, rows: list[int], gates: dict[str, torch.Tensor]) -> dict[int, bytes]:
        """Channel partial sums per shard among ``rows``, of this model."""
        shards = batch[SHARD].to_numpy()[rows]
        found = {}
        for shard in np.unique(shards):
            mine = torch.as_tensor(np.flatnonzero(shards == shard))
            picked = {layer: g[mine.to(g.device)] for layer, g in gates.items()}
            found[int(shard)] = channel_stats.to_bytes(channel_stats.partials(picked, self.position))
        return found

    def _forward_one_by_one(self, inputs: np.ndarray | torch.Tensor, ok: list[int], status: list[str],
                            error: list[str | None]) -> tuple[list[ghostnet.InferenceOutput], list[int]]:
        """Each item alone, after its batch failed: an item that fails alone is its own model_error.
        Every item failing the same way is no bad input but our bug, and fails the run."""
        outputs: list[ghostnet.InferenceOutput] = []
        rows: list[int] = []
        failures: list[Exception] = []
        for j, i in enumerate(ok):
            try:
                outputs.append(self._forward(inputs[j : j + 1]))
                rows.append(i)
            except Exception as exc:  # noqa: BLE001 - this item's model_error, the others go on
                failures.append(exc)
                status[i] = Status.MODEL_ERROR.value
                error[i] = f"{type(exc).__name__}: {exc}"
        if len(failures) > 1 and not rows and len({type(e) for e in failures}) == 1:
            raise InternalError(f"the model failed on all {len(failures)} items of a batch with the same error, "
                                f"{error[ok[0]]}; that is not bad input") from failures[0]
        return outputs, rows

    def _forward(self, inputs: np.ndarray | torch.Tensor) -> ghostnet.InferenceOutput:
        x = self.to_input(inputs)
        if self.engine == "onnx" and self._compiled is not None:
            return self._compiled(x)
        if self._compiled is not None and len(x) > 1:
            return self._forward_compiled(x)
        if self.engine == "onnx":  # its export failed: the torch model, in its layout
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model.forward_all(x, embeddings=self.embeddings)

    def _onnx(self, spec: ModelSpec) -> Callable[[torch.Tensor], ghostnet.InferenceOutput] | None:
        """ONNX Runtime on this actor's threads, with the model's graph exported here or read from the cache."""
        started = time.perf_counter()
        try:
            forward = engine.onnx_engine(spec, self.model, self._example_input(), threads=torch.get_num_threads(),
                                         embeddings=self.embeddings)
        except Exception as exc:  # noqa: BLE001 - no exporter, unsupported op, ...: run eager, never a dead actor
            log.warning("the ONNX export of %s failed after %.1f s, running torch instead: %s: %s", self.model_name,
                        time.perf_counter() - started, type(exc).__name__, str(exc).strip()[:500])
            return None
        log.info("ONNX Runtime session for %s ready in %.1f s", self.model_name, time.perf_counter() - started)
        return forward

    def _compile(self) -> Callable[[torch.Tensor], ghostnet.InferenceOutput] | None:
        """The compiled forward, built and run once here so the cost is paid (and logged) at start.

        One graph with a static batch of ``self.batch_size`` rows; shorter batches are padded up to
        it (see ``_forward_compiled``). On a 2-core CPU with ghostnet_050, batch 32, 1 thread
        (``bench/predictor_cpu.py``, ``bench/results/predictor_cpu.json``), a graph with a dynamic
        batch dimension took longer to compile cold than the static one (144 s against 96 s) and
        ran no faster than eager, where the static one ran about 10% faster; a dynamic graph would
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
        return self.to_input(self.front_end.example_input(self.meta, self.batch_size))

    def _forward_compiled(self, x: torch.Tensor) -> ghostnet.InferenceOutput:
        """The compiled graph on ``x`` in pieces of ``batch_size`` rows, the last one padded with zeros."""
        compiled = self._compiled
        if compiled is None:
            raise InternalError("the compiled forward was called on an actor that runs eager")
        size, pieces = self.batch_size, []
        for start in range(0, len(x), size):
            piece = x[start : start + size]
            n = len(piece)
            if n < size:
                padded = torch.zeros((size, *piece.shape[1:]), dtype=piece.dtype, device=piece.device)
                padded = padded.contiguous(memory_format=torch.channels_last)
                padded[:n] = piece
                piece = padded
            pieces.append(compiled(piece).head(n))
        return pieces[0] if len(pieces) == 1 else ghostnet.InferenceOutput.cat(pieces)


class ModelStage:
    """The model stage of a run: every model of the run on one actor, loaded once here, in the run's
    order; Ray Data builds one per actor. ``groups[i]`` is model i's decode group (its rows' ``_group``),
    and each model takes the rows of its group whose item the plan marks for it (``_models``)."""

    def __init__(self, specs: list[ModelSpec], *, groups: list[int], topk: list[int], embeddings: list[bool],
                 reporter: Reporter | None = None, **common: Any) -> None:
        """``common``: what every model's :class:`Predictor` takes besides (run id, threads, device
        decoding, batch size, compile...)."""
        try:
            self.models = [Predictor(spec, position=i, topk=k, embeddings=e, **common)
                           for i, (spec, k, e) in enumerate(zip(specs, topk, embeddings, strict=True))]
        except torch.cuda.OutOfMemoryError:
            raise UsageError(
                f"the {len(specs)} models of this run do not fit the memory of this actor's GPU; lower --batch-size "
                "or split the models over runs on the same output (docs/operations.md, 'Several models')") from None
        self.groups = groups
        self.reporter = reporter

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        decode_s = 0.0
        tables = []
        group_of_row = batch[GROUP].to_numpy()
        wanted = batch[MODELS].to_numpy()
        for group in np.unique(group_of_row):
            members = [m for m, g in zip(self.models, self.groups, strict=True) if g == group]
            rows = np.flatnonzero(group_of_row == group)
            part = batch if len(rows) == batch.num_rows else batch.take(pa.array(rows))
            status, error = part["status"].to_pylist(), part["error"].to_pylist()
            t = time.perf_counter()
            inputs, ok = members[0].inputs(part, status, error)
            decode_s += time.perf_counter() - t if members[0].decode_on_device else 0.0
            for model in members:
                if np.any(wanted[rows] & (1 << model.position)):
                    tables.append(_model_rows(model, part, wanted[rows], status, error, inputs, ok))
        rows_out = pa.concat_tables(tables) if tables else ROWS.empty_table()
        if self.reporter is not None:
            self.reporter.model_batch(time.perf_counter() - started, rows_out["status"].to_pylist(),
                                      self.models[0].device, decode_s=decode_s)
        return rows_out


def _model_rows(model: Predictor, part: pa.Table, wanted: np.ndarray, status: list[str], error: list[str | None],
                inputs: np.ndarray | torch.Tensor | None, ok: list[int]) -> pa.Table:
    """``model``'s rows of the rows of ``part`` whose item its plan marks (``wanted``: the rows' masks),
    ``inputs[j]`` being row ``ok[j]``'s decoded input."""
    need = (wanted & (1 << model.position)) != 0
    if need.all():
        return model.rows(part, list(status), list(error), inputs, ok)
    keep = np.flatnonzero(need)
    at = {int(row): j for j, row in enumerate(keep)}
    chosen = [j for j, row in enumerate(ok) if row in at]
    mine = None if inputs is None or not chosen else inputs[chosen]
    return model.rows(part.take(pa.array(keep)), [status[i] for i in keep], [error[i] for i in keep], mine,
                      [at[ok[j]] for j in chosen])

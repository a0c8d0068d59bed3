"""Which engine runs a model actor's batches (``--engine``), and the local cache of ONNX exports.

``torch`` is eager PyTorch (fp16 on a GPU); ``compile`` adds ``torch.compile`` (the same as
``--compile``); ``onnx`` runs the model exported with ``torch.onnx`` in ONNX Runtime, CPU actors
only. Without ``--engine``, a CPU actor runs :data:`DEFAULT_CPU_ENGINE`, the fastest on CPUs with
fp32 parity (bench/engines.py), and a GPU actor runs ``torch``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import ENGINES
from pipeline.model import ModelSpec

if TYPE_CHECKING:
    import torch

    import ghostnet
    from ghostnet.engines import OnnxEngine

__all__ = ["DEFAULT_CPU_ENGINE", "ENGINES", "onnx_engine", "resolve"]

log = logging.getLogger("ghostnet_pipeline")

DEFAULT_CPU_ENGINE = "onnx"
CACHE = "GHOSTNET_CACHE"  # where exported models are kept (default: ~/.cache/ghostnet-pipeline)


def resolve(engine: str | None, *, on_gpu: bool) -> str:
    """The engine an actor runs: the one asked for, or the default for its device."""
    if engine is None:
        return "torch" if on_gpu else DEFAULT_CPU_ENGINE
    if engine == "onnx" and on_gpu:
        log.warning("--engine onnx runs on CPU actors; this GPU actor runs torch (fp16) instead")
        return "torch"
    return engine


def onnx_engine(spec: ModelSpec, model: ghostnet.GhostNet, example: torch.Tensor, *, threads: int,
                embeddings: bool) -> OnnxEngine:
    """ONNX Runtime on ``model`` (inference form), exported once per model, weights and versions and
    kept in the local cache, so a later actor or run on this machine loads it instead."""
    from ghostnet import engines

    path = _cache_folder() / f"{_cache_key(spec, example)}.onnx"
    try:
        graph = path.read_bytes()
    except OSError:
        graph = engines.export_onnx(model, example)
        _write_atomically(path, graph)
    return engines.OnnxEngine(graph, threads=threads, embeddings=embeddings)


def _cache_key(spec: ModelSpec, example: torch.Tensor) -> str:
    from importlib import metadata

    import torch

    from ghostnet.engines import OPSET

    parts = (spec.name, spec.identity(), spec.modality, str(spec.num_classes), str(spec.in_chans),
             str(tuple(example.shape[1:])), torch.__version__, metadata.version("onnx"), str(OPSET))
    return f"{spec.name}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:24]}"


def _cache_folder() -> Path:
    base = os.environ.get(CACHE) or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                 "ghostnet-pipeline")
    return Path(base) / "onnx"


def _write_atomically(path: Path, data: bytes) -> None:
    """Best effort: a cache that cannot be written only means exporting again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as f:
            f.write(data)
        os.replace(f.name, path)
    except OSError as exc:
        log.info("could not keep the ONNX export in %s: %s", path.parent, exc)

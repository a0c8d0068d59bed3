"""Whether a run's models fit one model actor's device, checked before anything starts.

Each model actor holds every model of the run and runs them one after another on the same batch,
so what an actor needs is the sum of the models' weights (in the dtype the actor runs them in)
plus the activations of the largest one at the run's batch size. The activations are estimated
from the input: :data:`ACTIVATION_FACTOR` times the bytes of a batch of inputs, above the largest
peak measured over the architectures (``bench/activation_memory.py``: 5 for ghostnet_050, 12 for
ghostnet_100, 16-19 for ghostnetv2_160, on a CPU in float32).

The device an actor gets: a GPU's memory (times ``--gpus-per-actor``), read on the driver when it
has the same GPUs as the actors, and again in each actor on its own device; a CPU actor's share of
this machine's memory: :data:`CPU_MEMORY_SHARE` of it divided among the model actors the run
starts here (the rest is for decoding, Ray's object store and the driver).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.errors import UsageError

if TYPE_CHECKING:
    import torch

    import ghostnet
    from pipeline.config import RunConfig

__all__ = ["ACTIVATION_FACTOR", "CPU_MEMORY_SHARE", "check", "check_driver", "model_bytes", "needed_bytes"]

ACTIVATION_FACTOR = 20.0  # peak activation bytes of a forward pass per byte of its input batch
CPU_MEMORY_SHARE = 0.5


def model_bytes(model: torch.nn.Module) -> int:
    """The bytes of a model's parameters and buffers as loaded."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def needed_bytes(models: Sequence[tuple[ghostnet.ModelMeta, int]], batch_size: int, dtype_bytes: int) -> int:
    """What an actor holding ``models`` ((metadata, bytes of its weights as loaded in float32)) needs
    at ``batch_size`` rows in a dtype of ``dtype_bytes``."""
    weights = sum(size * dtype_bytes // 4 for _, size in models)
    inputs = max(_input_elements(meta) for meta, _ in models) * batch_size * dtype_bytes
    return int(weights + ACTIVATION_FACTOR * inputs)


def check(models: Sequence[tuple[str, ghostnet.ModelMeta, int]], batch_size: int, dtype_bytes: int,
          available: int, device: str) -> None:
    """Raise a :class:`UsageError` saying what to do when ``models`` ((name, metadata, weight bytes))
    do not fit ``available`` bytes of ``device``."""
    needed = needed_bytes([(meta, size) for _, meta, size in models], batch_size, dtype_bytes)
    if needed <= available:
        return
    names = ", ".join(name for name, _, _ in models)
    raise UsageError(
        f"the {len(models)} models of this run ({names}) need about {needed / 2**30:.1f} GiB on one model actor "
        f"at --batch-size {batch_size}, more than the {available / 2**30:.1f} GiB of its {device}. Lower "
        "--batch-size, or split the models over runs on the same output (each labels only what it has not; "
        "docs/operations.md, 'Several models')")


def check_driver(config: RunConfig, models: Sequence[tuple[str, ghostnet.ModelMeta, int]]) -> None:
    """:func:`check` with what the driver can know of the actors' device: its own GPU when the actors
    get GPUs and it has one (the actors check again on theirs), else this machine's memory for CPU
    actors. Silent for GPU actors of a cluster whose GPUs the driver cannot see."""
    import torch

    from pipeline.config import default_batch_size

    on_gpu = config.gpus_per_actor != 0 and (config.gpus_per_actor is not None or torch.cuda.is_available())
    batch_size = config.batch_size or default_batch_size(on_gpu=on_gpu)
    if on_gpu:
        if not torch.cuda.is_available():
            return
        available = int(torch.cuda.get_device_properties(0).total_memory * min(1.0, config.gpus_per_actor or 1.0))
        check(models, batch_size, 2, available, "GPU")
        return
    check(models, batch_size, 4, cpu_budget(config), "share of this machine's memory (CPU actors)")


def cpu_budget(config: RunConfig) -> int:
    """A CPU model actor's share of this machine's memory: :data:`CPU_MEMORY_SHARE` of it over the
    actors a run starts here (``--actors``, else one per core for 3/4 of the cores)."""
    from pipeline.stages import CPU_MODEL_SHARE

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cores = config.num_cpus or os.cpu_count() or 1
    actors = config.actors or max(1, round(cores * CPU_MODEL_SHARE))
    return int(total * CPU_MEMORY_SHARE / actors)


def _input_elements(meta: ghostnet.ModelMeta) -> int:
    if meta.audio is not None:
        frames = int(meta.audio.window_s * meta.audio.sample_rate) // meta.audio.hop_length + 1
        return meta.audio.n_mels * frames
    c, h, w = meta.input_size
    return c * h * w

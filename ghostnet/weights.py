"""Reading, checking, loading and saving GhostNet weights.

Sources: a local path, any fsspec URL (`s3://bucket/key`, using the standard AWS environment such
as `AWS_ENDPOINT_URL`) or `hf-hub:org/name`. Formats: safetensors (preferred; may carry a
`ModelMeta` under the metadata key "ghostnet") or a torch file read with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file
from torch import nn

from .layers import GhostModule, conv_bns
from .meta import ModelMeta
from .model import GhostBottleneck, GhostNet, checkpoint_filter_fn

__all__ = [
    "Checkpoint",
    "WeightsError",
    "check_architecture",
    "init_random",
    "load_state_dict_strict",
    "load_weights",
    "read_checkpoint",
    "save_weights",
]

META_KEY = "ghostnet"
HF_PREFIX = "hf-hub:"
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")
# Offending keys listed per category in a mismatch message.
MAX_LISTED_KEYS = 5
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class WeightsError(ValueError):
    """Weights could not be fetched, verified, parsed or matched to the model."""


@dataclass(frozen=True)
class Checkpoint:
    """Tensors of a checkpoint after `checkpoint_filter_fn`, its metadata when it has some, and the
    sha256 of the raw file (the identity the pipeline records as `weights_sha256`)."""

    uri: str
    state_dict: dict[str, torch.Tensor]
    meta: ModelMeta | None
    sha256: str


def read_checkpoint(uri: str | os.PathLike[str], *, sha256: str | None = None) -> Checkpoint:
    """Fetch, verify and parse a checkpoint without touching any model.

    Args:
        uri: Local path, fsspec URL or `hf-hub:org/name`.
        sha256: Expected hex digest of the raw file bytes, checked before parsing.

    Raises:
        WeightsError: unreachable source, digest mismatch, unreadable or unsafe file.
    """
    uri = os.fspath(uri)
    data = _fetch(uri)
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None:
        _verify_sha256(uri, digest, sha256)
    if _looks_like_safetensors(data):
        tensors, meta = _parse_safetensors(uri, data)
    else:
        tensors, meta = _parse_torch(uri, data), None
    return Checkpoint(uri=uri, state_dict=tensors, meta=meta, sha256=digest)


def load_weights(model: GhostNet, uri: str | os.PathLike[str], sha256: str | None = None) -> ModelMeta | None:
    """Load a checkpoint into `model` strictly; return (and attach as `model.meta`) its metadata, if any.

    Example:
        >>> from ghostnet import create_model, load_weights
        >>> model = create_model("ghostnet_100")
        >>> meta = load_weights(model, "weights/ghostnet_100.safetensors")  # doctest: +SKIP

    Args:
        model: A model in training form (before `for_inference`).
        uri: Local path, fsspec URL (`s3://...`) or `hf-hub:org/name`.
        sha256: Expected hex digest of the raw file bytes.

    Raises:
        WeightsError: see `read_checkpoint`; also a different architecture or any missing,
            unexpected or mis-shaped key. The model is left unchanged in that case.
    """
    if model.inference_form:
        raise WeightsError("cannot load weights after for_inference(); load them first, then fuse")
    checkpoint = read_checkpoint(uri, sha256=sha256)
    if checkpoint.meta is not None and model.meta is not None:
        check_architecture(checkpoint.uri, checkpoint.meta, model.meta.architecture)
    load_state_dict_strict(model, checkpoint.state_dict, source=checkpoint.uri)
    model.weights_sha256 = checkpoint.sha256
    if checkpoint.meta is not None:
        model.meta = checkpoint.meta
    return checkpoint.meta


def save_weights(model: GhostNet, path: str | os.PathLike[str], meta: ModelMeta | None = None) -> None:
    """Write the model's tensors as safetensors, with `meta` (default: `model.meta`) as JSON metadata.

    Raises:
        WeightsError: the model was already converted by `for_inference`; its fused tensors
            would not load into a freshly built model.
    """
    if model.inference_form:
        raise WeightsError("cannot save a model after for_inference(); save the weights before fusing")
    meta = meta if meta is not None else model.meta
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {META_KEY: meta.to_json()} if meta is not None else None
    save_file(tensors, os.fspath(path), metadata=metadata)


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Copy tensors into `model` after checking that keys and shapes match exactly.

    Raises:
        WeightsError: listing the first missing, unexpected and mis-shaped keys.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (checkpoint {_shape(state_dict[k])}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and _shape(state_dict[k]) != tuple(v.shape)
    ]
    problems = [
        _listing(label, keys)
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched))
        if keys
    ]
    if problems:
        raise WeightsError(f"weights from {source} do not fit the model: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def _shape(value: object) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _listing(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    return f"{len(keys)} {label}: {shown}" + (", ..." if len(keys) > MAX_LISTED_KEYS else "")


def init_random(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialise every weight from `seed` alone, independent of the global RNG and of the device.

    Convs get N(0, 1/fan_in) weights and zero bias, BatchNorm the identity transform, the classifier
    N(0, 0.01); the BNs of v3 branches that are summed get gamma 1/sqrt(branches), so activations
    keep their scale through the network. The same seed gives bit-identical tensors.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            _init_module(module, generator)
        for branch_norms in _summed_branch_norms(model):
            for norm in branch_norms:
                norm.weight.fill_(len(branch_norms) ** -0.5)
    return model


def _summed_branch_norms(model: nn.Module) -> Iterator[list[nn.BatchNorm2d]]:
    for module in model.modules():
        if isinstance(module, GhostModule) and module.multi_branch:
            yield [b.norm for b in conv_bns(module.primary_rpr_conv)]
            cheap = conv_bns(module.cheap_rpr_conv)
            yield [*(b.norm for b in cheap), module.cheap_rpr_scale.norm, module.cheap_rpr_skip]
        elif isinstance(module, GhostBottleneck) and module.multi_branch:
            yield [*(b.norm for b in conv_bns(module.dw_rpr_conv)), module.dw_rpr_scale.norm]


def _init_module(module: nn.Module, generator: torch.Generator) -> None:
    if isinstance(module, nn.Conv2d):
        fan_in = module.weight[0].numel()
        _fill_normal(module.weight, fan_in**-0.5, generator)
    elif isinstance(module, nn.Linear):
        _fill_normal(module.weight, 0.01, generator)
    elif isinstance(module, nn.BatchNorm2d):
        module.reset_parameters()
        return
    else:
        return
    if module.bias is not None:
        module.bias.zero_()


def _fill_normal(tensor: torch.Tensor, std: float, generator: torch.Generator) -> None:
    values = torch.randn(tensor.shape, generator=generator, dtype=torch.float32) * std
    tensor.copy_(values)


def check_architecture(uri: str, meta: ModelMeta, architecture: str) -> None:
    """Raise WeightsError when a checkpoint's metadata names another architecture."""
    if meta.architecture != architecture:
        raise WeightsError(f"weights from {uri} are for {meta.architecture}, not {architecture}")


def _fetch(uri: str) -> bytes:
    if uri.startswith(HF_PREFIX):
        return _fetch_hf(uri)
    if "://" in uri:
        return _fetch_fsspec(uri)
    try:
        return Path(uri).read_bytes()
    except OSError as err:
        raise WeightsError(f"cannot read weights file {uri}: {err.strerror or err}") from err


def _fetch_fsspec(uri: str) -> bytes:
    import fsspec

    try:
        # A fresh filesystem picks up the current AWS environment instead of a cached client.
        with fsspec.open(uri, "rb", skip_instance_cache=True) as f:
            data: bytes = f.read()
        return data
    except (OSError, ValueError, ImportError) as err:
        raise WeightsError(f"cannot read weights from {uri}: {type(err).__name__}: {err}") from err


def _fetch_hf(uri: str) -> bytes:
    repo_id = uri.removeprefix(HF_PREFIX)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError as err:
        raise WeightsError(f"cannot fetch {uri}: huggingface_hub is not installed") from err
    for filename in HF_FILENAMES:
        try:
            return Path(hf_hub_download(repo_id, filename)).read_bytes()
        # LocalEntryNotFoundError subclasses EntryNotFoundError, so it has to come first.
        except LocalEntryNotFoundError as err:
            raise WeightsError(
                f"cannot fetch {uri}: the Hugging Face Hub is offline or unreachable and {filename} is not "
                f"cached; download it elsewhere and pass its local path instead"
            ) from err
        except EntryNotFoundError:
            continue
        except ValueError as err:
            raise WeightsError(f"cannot fetch {uri}: {repo_id!r} is not a valid hub repo id") from err
        except OSError as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise WeightsError(f"cannot fetch {uri}: {reason}") from err
    raise WeightsError(f"{uri} has neither {' nor '.join(HF_FILENAMES)}")


def _verify_sha256(uri: str, got: str, expected: str) -> None:
    expected = expected.lower()
    if not _SHA256_RE.fullmatch(expected):
        raise WeightsError(f"sha256 pin must be 64 hex characters, got {expected!r}")
    if got != expected:
        raise WeightsError(f"sha256 mismatch for {uri}: expected {expected}, got {got}")


def _looks_like_safetensors(data: bytes) -> bool:
    # safetensors: 8-byte little-endian header length, then a JSON header starting with '{'.
    return len(data) >= 9 and data[8:9] == b"{"


def _parse_safetensors(uri: str, data: bytes) -> tuple[dict[str, torch.Tensor], ModelMeta | None]:
    try:
        tensors = load_safetensors_bytes(data)
        (header_len,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, struct.error) as err:
        raise WeightsError(f"{uri} is not a valid safetensors file (corrupt or truncated): {err}") from err
    try:
        meta = ModelMeta.from_json(metadata[META_KEY]) if META_KEY in metadata else None
    except ValueError as err:
        raise WeightsError(f"{uri} has invalid '{META_KEY}' metadata: {err}") from err
    return checkpoint_filter_fn(tensors), meta


def _parse_torch(uri: str, data: bytes) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickler_detail(err)
        if "GLOBAL" in detail:
            raise WeightsError(
                f"refusing to load {uri}: its pickle would import code that weights-only loading blocks "
                f"({detail}); convert it to safetensors in a trusted environment"
            ) from err
        raise WeightsError(f"{uri} is neither a safetensors nor a loadable torch checkpoint ({detail})") from err
    except Exception as err:  # on garbage the unpickler fails in many ways (IndexError, KeyError, ...)
        kind = type(err).__name__
        raise WeightsError(f"{uri} is neither a safetensors nor a torch checkpoint: {kind}: {err}") from err
    if not isinstance(loaded, Mapping):
        raise WeightsError(f"{uri} holds a {type(loaded).__name__}, not a state_dict mapping")
    return checkpoint_filter_fn(loaded)


def _unpickler_detail(err: Exception) -> str:
    """The one informative line of torch's multi-line weights-only error, e.g. the blocked GLOBAL."""
    lines = [line.strip() for line in str(err).splitlines()]
    return next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[0] if lines else "")

"""Channel weights: the attention gates a GhostNet computes anyway, captured during a normal forward.

Keys (stable across `for_inference`, since the gate modules are never replaced):
    `blocks.G.B.se`          squeeze-excitation gate after the hard-sigmoid, shape (N, C)
    `blocks.G.B.ghost1.dfc`  v2/v3 DFC attention after the sigmoid, averaged over its own
                             (2x-pooled) spatial grid before upsampling, shape (N, C)
Values are detached float32 tensors on the model's device, in network order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .layers import GhostModule, SqueezeExcite

if TYPE_CHECKING:
    from .model import GhostNet

__all__ = ["InferenceOutput", "capture_channel_weights", "channel_weight_names", "traceable_forward_all"]


@dataclass
class InferenceOutput:
    """What the pipeline needs from one batch: logits, the 1280-d embedding if asked, channel weights."""

    logits: torch.Tensor
    embedding: torch.Tensor | None
    channel_weights: dict[str, torch.Tensor]

    def head(self, n: int) -> InferenceOutput:
        """The outputs of the first ``n`` inputs of the batch."""
        return InferenceOutput(
            logits=self.logits[:n],
            embedding=None if self.embedding is None else self.embedding[:n],
            channel_weights={name: gates[:n] for name, gates in self.channel_weights.items()},
        )

    @staticmethod
    def cat(outputs: list[InferenceOutput]) -> InferenceOutput:
        """The outputs of consecutive batches as those of one batch."""
        first = outputs[0]
        embeddings = [o.embedding for o in outputs if o.embedding is not None]
        if len(embeddings) not in (0, len(outputs)):
            raise ValueError("cannot concatenate outputs with and without embeddings")
        return InferenceOutput(
            logits=torch.cat([o.logits for o in outputs]),
            embedding=torch.cat(embeddings) if embeddings else None,
            channel_weights={
                name: torch.cat([o.channel_weights[name] for o in outputs]) for name in first.channel_weights
            },
        )


def _gates(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if isinstance(module, SqueezeExcite):
            yield name, module.gate
        elif isinstance(module, GhostModule) and module.dfc_gate is not None:
            yield f"{name}.dfc", module.dfc_gate


def channel_weight_names(model: nn.Module) -> list[str]:
    """The keys `capture_channel_weights` fills for this model, in network order."""
    return [name for name, _ in _gates(model)]


@contextmanager
def capture_channel_weights(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Yield a dict that every forward pass inside the block fills with the model's channel weights.

    Example:
        >>> import torch
        >>> from ghostnet import create_model, capture_channel_weights
        >>> model = create_model("ghostnet_100").eval()
        >>> with capture_channel_weights(model) as weights:
        ...     logits = model(torch.zeros(1, 3, 224, 224))
        >>> tuple(weights["blocks.3.0.se"].shape)
        (1, 72)

    A later forward in the same block overwrites the entries.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = [gate.register_forward_hook(_recorder(captured, name)) for name, gate in _gates(model)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def traceable_forward_all(model: GhostNet, *, embeddings: bool) -> Callable[[torch.Tensor], InferenceOutput]:
    """`model.forward_all` as one function `torch.compile` captures whole: gates, features and head.

    `forward_all` registers its hooks per call, which `torch.compile` cannot trace (a graph break);
    here they are registered once, for the life of `model`, and the capture dict is empty again
    when each call returns, so a compiled graph's guards hold from one call to the next. Give it a
    model of its own: every forward of `model` fills the dict, which a later call would then see.
    """
    captured: dict[str, torch.Tensor] = {}
    for name, gate in _gates(model):
        gate.register_forward_hook(_recorder(captured, name))

    def forward_all(x: torch.Tensor) -> InferenceOutput:
        embedding = model.forward_head(model.forward_features(x), pre_logits=True)
        channel_weights = dict(captured)
        captured.clear()
        return InferenceOutput(
            logits=model.classifier(embedding),
            embedding=embedding if embeddings else None,
            channel_weights=channel_weights,
        )

    return forward_all


Hook = Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]


def _recorder(captured: dict[str, torch.Tensor], name: str) -> Hook:
    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured[name] = output.detach().float().mean((2, 3))

    return record

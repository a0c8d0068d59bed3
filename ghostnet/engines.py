"""Engines: how an inference-form GhostNet runs a batch. Each returns the same `InferenceOutput`
(logits, optional embedding, channel weights) as `GhostNet.forward_all`.

- `torch`: `forward_all`, eager PyTorch (channels_last input).
- `onnx`: the same forward exported once with `torch.onnx` (gates, embedding and logits as graph
  outputs, a dynamic batch axis) and run by ONNX Runtime's CPU execution provider. fp32: its
  logits match `torch` to float tolerance (tests/ghostnet/test_engines.py).

`torch.compile` is the pipeline actor's `compile` engine (`pipeline.predict`, one static batch,
padded). INT8 (ONNX Runtime's static quantization) was measured and not adopted:
bench/engines.py, bench/RESULTS.md.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from typing import cast

import torch
from torch import nn

from .channel_weights import InferenceOutput, channel_weight_names, traceable_forward_all
from .model import GhostNet

__all__ = ["OPSET", "OnnxEngine", "export_onnx"]

OPSET = 17


class _Outputs(nn.Module):
    """`forward_all` as a module whose outputs are a flat tuple: logits, embedding, then each gate."""

    def __init__(self, model: GhostNet) -> None:
        super().__init__()
        self.model = model
        self.forward_all = traceable_forward_all(model, embeddings=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.forward_all(x)
        return (out.logits, cast(torch.Tensor, out.embedding), *out.channel_weights.values())


def export_onnx(model: GhostNet, example: torch.Tensor) -> bytes:
    """The ONNX graph of `model.forward_all` (`model` in inference form, fp32), batch axis dynamic."""
    module = _Outputs(copy.deepcopy(model).float().to(memory_format=torch.contiguous_format)).eval()
    names = ["logits", "embedding", *channel_weight_names(model)]
    with tempfile.TemporaryDirectory(prefix="ghostnet-onnx-") as folder:
        path = os.path.join(folder, "model.onnx")
        # The tracer warns at the input checks in `forward_features`: they hold for every batch the graph gets.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
            torch.onnx.export(
                module, (example.float().contiguous(),), path, dynamo=False, opset_version=OPSET,
                input_names=["input"], output_names=names,
                dynamic_axes={name: {0: "batch"} for name in ["input", *names]},
            )
        with open(path, "rb") as f:
            return f.read()


class OnnxEngine:
    """An ONNX graph from `export_onnx` (or `quantize_int8`) in an ONNX Runtime session on the CPU."""

    def __init__(self, graph: bytes, *, threads: int, embeddings: bool) -> None:
        self.graph, self.embeddings = graph, embeddings
        self.set_threads(threads)

    def set_threads(self, threads: int) -> None:
        """Run on ``threads`` threads from now on (a new session: ONNX Runtime fixes them at its start)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(self.graph, options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: torch.Tensor) -> InferenceOutput:
        values = self.session.run(None, {"input": x.detach().float().contiguous().cpu().numpy()})
        tensors: list[torch.Tensor] = [torch.from_numpy(v) for v in values]
        logits, embedding, gates = tensors[0], tensors[1], tensors[2:]
        return InferenceOutput(
            logits=logits,
            embedding=embedding if self.embeddings else None,
            channel_weights=dict(zip(self.outputs[2:], gates, strict=True)),
        )

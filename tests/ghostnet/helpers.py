"""Helpers shared by the ghostnet tests."""

from __future__ import annotations

import torch
from torch import nn


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial weights and BN statistics, so BN folding and branch fusion are really exercised."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor: torch.Tensor, low: float, high: float) -> None:
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                uniform(module.running_mean, -0.5, 0.5)
                uniform(module.running_var, 0.5, 2.0)
                uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.3, 0.3)
            elif isinstance(module, nn.Linear):
                uniform(module.weight, -0.1, 0.1)
    return model


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    """Max absolute difference within `rel` times the output scale (at least 1)."""
    scale = max(1.0, expected.abs().max().item())
    diff = (actual.float() - expected.float()).abs().max().item()
    assert diff <= rel * scale, f"max |diff| {diff:.3g} exceeds {rel} x scale {scale:.3g}"

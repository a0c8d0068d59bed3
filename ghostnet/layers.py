"""Building blocks of the GhostNet family: Ghost module (v1/v2/v3), squeeze-excitation, conv+BN.

Module and attribute names follow timm so that state_dict keys are identical.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# GhostNet rounds every channel count to a multiple of this.
CHANNEL_DIVISOR = 4
# Number of parallel conv branches in a GhostNetV3 re-parameterisable conv.
REP_BRANCHES = 3


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Round to the nearest multiple of divisor, never going below 90% of value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def relu_or_identity(act: bool) -> nn.Module:
    return nn.ReLU(inplace=True) if act else nn.Identity()


def conv_bn_act(
    in_chs: int, out_chs: int, kernel_size: int, *, stride: int = 1, groups: int = 1, act: bool = False
) -> nn.Sequential:
    """Conv (no bias) + BN + optional ReLU as a Sequential, so keys are `0.weight` and `1.*`."""
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_chs),
        relu_or_identity(act),
    )


class ConvBn(nn.Module):
    """Conv (no bias) + BN + optional ReLU with timm's `ConvBnAct` names: `conv`, `bn1`."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        act: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn1: nn.Module = nn.BatchNorm2d(out_chs)
        self.act = relu_or_identity(act)

    @property
    def norm(self) -> nn.BatchNorm2d:
        """`bn1` while it is still a BatchNorm, that is before `ghostnet.for_inference` folds it."""
        if not isinstance(self.bn1, nn.BatchNorm2d):
            raise ValueError("this ConvBn's BatchNorm is already folded into its conv")
        return self.bn1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.bn1(self.conv(x)))
        return out


def conv_bns(modules: nn.ModuleList) -> list[ConvBn]:
    """The branches of a v3 multi-branch conv, typed as the ConvBns they are (nn.ModuleList types plain Modules)."""
    branches = [module for module in modules if isinstance(module, ConvBn)]
    if len(branches) != len(modules):
        raise TypeError("expected a ModuleList of ConvBn branches")
    return branches


class SqueezeExcite(nn.Module):
    """Squeeze-excitation with a hard-sigmoid gate; `gate` is its own module so it can be observed."""

    def __init__(self, channels: int, se_ratio: float) -> None:
        super().__init__()
        reduced = make_divisible(channels * se_ratio)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean((2, 3), keepdim=True)
        gate: torch.Tensor = self.gate(self.conv_expand(self.act1(self.conv_reduce(squeezed))))
        return x * gate


def dfc_branch(in_chs: int, out_chs: int) -> nn.Sequential:
    """GhostNetV2 decoupled fully-connected attention: 1x1 conv, then 1x5 and 5x1 depthwise, each + BN."""
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, 1, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.Conv2d(out_chs, out_chs, (1, 5), padding=(0, 2), groups=out_chs, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.Conv2d(out_chs, out_chs, (5, 1), padding=(2, 0), groups=out_chs, bias=False),
        nn.BatchNorm2d(out_chs),
    )


class GhostModule(nn.Module):
    """Ghost module: a 1x1 primary conv plus a 3x3 depthwise cheap conv, concatenated.

    With `dfc=True` (GhostNetV2/V3) the output is gated by DFC attention computed from the input.
    With `rep=True` (GhostNetV3 training form) the primary and cheap convs are multi-branch sums
    (`primary_rpr_*`, `cheap_rpr_*`) until `ghostnet.fuse.reparameterize` turns them into single convs.
    """

    def __init__(self, in_chs: int, out_chs: int, *, act: bool, dfc: bool = False, rep: bool = False) -> None:
        super().__init__()
        self.out_chs = out_chs
        init_chs = math.ceil(out_chs / 2)
        self.multi_branch = rep
        if rep:
            self._build_rep_branches(in_chs, init_chs, act)
        else:
            self.primary_conv = conv_bn_act(in_chs, init_chs, 1, act=act)
            self.cheap_operation = conv_bn_act(init_chs, init_chs, 3, groups=init_chs, act=act)
        self.short_conv = dfc_branch(in_chs, out_chs) if dfc else None
        self.dfc_gate = nn.Sigmoid() if dfc else None

    def _build_rep_branches(self, in_chs: int, init_chs: int, act: bool) -> None:
        self.primary_rpr_conv = nn.ModuleList(ConvBn(in_chs, init_chs, 1) for _ in range(REP_BRANCHES))
        self.primary_activation = relu_or_identity(act)
        self.cheap_rpr_skip = nn.BatchNorm2d(init_chs)
        self.cheap_rpr_conv = nn.ModuleList(ConvBn(init_chs, init_chs, 3, groups=init_chs) for _ in range(REP_BRANCHES))
        self.cheap_rpr_scale = ConvBn(init_chs, init_chs, 1, groups=init_chs)
        self.cheap_activation = relu_or_identity(act)

    def _primary(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor
        if not self.multi_branch:
            out = self.primary_conv(x)
        else:
            out = self.primary_activation(sum(branch(x) for branch in self.primary_rpr_conv))
        return out

    def _cheap(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor
        if not self.multi_branch:
            out = self.cheap_operation(x)
        else:
            total = self.cheap_rpr_scale(x) + self.cheap_rpr_skip(x)
            out = self.cheap_activation(sum((branch(x) for branch in self.cheap_rpr_conv), total))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self._primary(x)
        out = torch.cat([primary, self._cheap(primary)], dim=1)[:, : self.out_chs]
        if self.short_conv is None or self.dfc_gate is None:
            return out
        gate = self.dfc_gate(self.short_conv(F.avg_pool2d(x, kernel_size=2, stride=2)))
        return out * F.interpolate(gate, size=out.shape[-2:], mode="nearest")

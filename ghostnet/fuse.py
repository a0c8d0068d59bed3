"""Inference form: GhostNetV3 branch re-parameterisation and BatchNorm folding, in place."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBn, GhostModule, conv_bns
from .model import GhostBottleneck, GhostNet

__all__ = ["for_inference", "reparameterize"]

Kernel = tuple[torch.Tensor, torch.Tensor]


def for_inference(model: GhostNet) -> GhostNet:
    """Convert `model` in place into its fastest equivalent eval form and return it.

    v3 re-parameterisable branches become single convs (the v2 inference architecture), then every
    BatchNorm that follows a conv is folded into it (stem, ghost primary/cheap, DFC, conv_dw,
    shortcut, final conv). SE and DFC gate modules keep their names, so channel-weight keys do not
    change. The result is in eval mode and cannot be trained or saved with `save_weights`.
    """
    model.eval()
    reparameterize(model)
    _fold_pair(model, "conv_stem", "bn1")
    for module in list(model.modules()):
        _fold_module(module)
    model.inference_form = True
    return model


def reparameterize(model: GhostNet) -> GhostNet:
    """Fuse GhostNetV3 multi-branch convs in place, like timm's `reparameterize_model`; BNs elsewhere stay.

    A no-op for v1/v2 and for models already fused.
    """
    for module in list(model.modules()):
        if isinstance(module, GhostModule) and module.multi_branch:
            _fuse_ghost_module(module)
        elif isinstance(module, GhostBottleneck) and module.multi_branch:
            _fuse_downsample(module)
    return model


def _fold_module(module: nn.Module) -> None:
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            _fold_pair(module, str(i), str(i + 1))
    elif isinstance(module, GhostBottleneck) and module.stride > 1:
        _fold_pair(module, "conv_dw", "bn_dw")
    elif isinstance(module, ConvBn):
        _fold_pair(module, "conv", "bn1")


def _fold_pair(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
    if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
        return
    setattr(parent, conv_name, _conv_with(conv, _fold_bn(conv.weight, conv.bias, bn)))
    setattr(parent, bn_name, nn.Identity())


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> Kernel:
    """Kernel and bias of conv-then-BN (eval statistics) as one conv, computed in float64."""
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics")
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    conv_bias = bias.double() if bias is not None else torch.zeros_like(scale)
    fused_bias = (conv_bias - bn.running_mean.double()) * scale + bn.bias.double()
    return weight.double() * scale.reshape(-1, 1, 1, 1), fused_bias


def _conv_with(template: nn.Conv2d, kernel: Kernel) -> nn.Conv2d:
    """A biased copy of `template` carrying the given kernel and bias."""
    weight, bias = kernel
    padding = template.padding
    conv = nn.Conv2d(
        template.in_channels,
        template.out_channels,
        _pair(template.kernel_size),
        _pair(template.stride),
        padding if isinstance(padding, str) else _pair(padding),
        _pair(template.dilation),
        template.groups,
        bias=True,
        device=template.weight.device,
        dtype=template.weight.dtype,
    )
    assert conv.bias is not None
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


def _pair(size: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d size attribute, which torch types as a tuple of any length, as the pair it is."""
    height, width = size
    return height, width


def _sum_kernels(kernels: Iterable[Kernel]) -> Kernel:
    weights, biases = zip(*kernels, strict=True)
    return torch.stack(weights).sum(0), torch.stack(biases).sum(0)


def _branch_kernel(branch: ConvBn, kernel_size: int) -> Kernel:
    """A conv+BN branch as a fused kernel, zero-padded to kernel_size (for 1x1 scale branches)."""
    weight, bias = _fold_bn(branch.conv.weight, None, branch.norm)
    pad = (kernel_size - weight.shape[-1]) // 2
    return F.pad(weight, [pad] * 4), bias


def _identity_kernel(bn: nn.BatchNorm2d, kernel_size: int) -> Kernel:
    """A BN-only identity branch as a depthwise conv: a centred one-hot kernel per channel."""
    identity = torch.zeros(bn.num_features, 1, kernel_size, kernel_size, device=bn.weight.device)
    identity[:, 0, kernel_size // 2, kernel_size // 2] = 1
    return _fold_bn(identity, None, bn)


def _fuse_ghost_module(module: GhostModule) -> None:
    primary_branches, cheap_branches = conv_bns(module.primary_rpr_conv), conv_bns(module.cheap_rpr_conv)
    primary_template = primary_branches[0].conv
    primary = _sum_kernels(_branch_kernel(b, 1) for b in primary_branches)
    cheap_template = cheap_branches[0].conv
    size = cheap_template.kernel_size[0]
    cheap = _sum_kernels(
        [
            *(_branch_kernel(b, size) for b in cheap_branches),
            _branch_kernel(module.cheap_rpr_scale, size),
            _identity_kernel(module.cheap_rpr_skip, size),
        ]
    )
    # Index 1 stays an (empty) BN slot so the layout matches v1/v2 after BN folding.
    module.primary_conv = nn.Sequential(_conv_with(primary_template, primary), nn.Identity(), module.primary_activation)
    module.cheap_operation = nn.Sequential(_conv_with(cheap_template, cheap), nn.Identity(), module.cheap_activation)
    for name in (
        "primary_rpr_conv",
        "primary_activation",
        "cheap_rpr_skip",
        "cheap_rpr_conv",
        "cheap_rpr_scale",
        "cheap_activation",
    ):
        delattr(module, name)
    module.multi_branch = False


def _fuse_downsample(block: GhostBottleneck) -> None:
    branches = conv_bns(block.dw_rpr_conv)
    template = branches[0].conv
    size = template.kernel_size[0]
    kernel = _sum_kernels([*(_branch_kernel(b, size) for b in branches), _branch_kernel(block.dw_rpr_scale, size)])
    block.conv_dw = _conv_with(template, kernel)
    block.bn_dw = nn.Identity()
    del block.dw_rpr_conv, block.dw_rpr_scale
    block.multi_branch = False

"""GhostNet v1, v2 and v3 in one class, state_dict-compatible with timm.

Papers:
    GhostNet: More Features from Cheap Operations, https://arxiv.org/abs/1911.11907
    GhostNetV2: Enhance Cheap Operation with Long-Range Attention, https://arxiv.org/abs/2211.12905
    GhostNetV3: Exploring the Training Strategies for Compact Models, https://arxiv.org/abs/2404.11202
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .layers import REP_BRANCHES, ConvBn, GhostModule, SqueezeExcite, make_divisible

if TYPE_CHECKING:
    from .channel_weights import InferenceOutput
    from .meta import ModelMeta

__all__ = ["GHOSTNET_LAYOUT", "MIN_DFC_INPUT_SIZE", "GhostBottleneck", "GhostNet", "checkpoint_filter_fn"]

Version = Literal["v1", "v2", "v3"]
VERSIONS: tuple[Version, ...] = ("v1", "v2", "v3")

# One inner tuple per stage; rows are [kernel, expansion (mid) channels, out channels, SE ratio, stride].
# Stride-2 blocks sit in their own stage, so `blocks.N.M` indices follow this grouping, not the paper's.
GHOSTNET_LAYOUT: tuple[tuple[tuple[int, int, int, float, int], ...], ...] = (
    ((3, 16, 16, 0.0, 1),),
    ((3, 48, 24, 0.0, 2),),
    ((3, 72, 24, 0.0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0.0, 2),),
    (
        (3, 200, 80, 0.0, 1),
        (3, 184, 80, 0.0, 1),
        (3, 184, 80, 0.0, 1),
        (3, 480, 112, 0.25, 1),
        (3, 672, 112, 0.25, 1),
    ),
    ((5, 672, 160, 0.25, 2),),
    (
        (5, 960, 160, 0.0, 1),
        (5, 960, 160, 0.25, 1),
        (5, 960, 160, 0.0, 1),
        (5, 960, 160, 0.25, 1),
    ),
)
STEM_CHANNELS = 16
HEAD_CHANNELS = 1280
# v2/v3 DFC attention starts at this global block index (blocks.2.0).
FIRST_DFC_BLOCK = 2
# DFC pools 2x2 in the last stage, which runs at stride 32: each side needs ceil(side / 32) >= 2.
MIN_DFC_INPUT_SIZE = 33


class GhostBottleneck(nn.Module):
    """Ghost bottleneck: ghost1 (expand), stride-2 depthwise conv, optional SE, ghost2 (project), residual."""

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        kernel_size: int,
        stride: int,
        se_ratio: float,
        *,
        dfc: bool,
        rep: bool,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(in_chs, mid_chs, act=True, dfc=dfc, rep=rep)
        self.multi_branch = rep and stride > 1
        if self.multi_branch:
            self.dw_rpr_conv = nn.ModuleList(
                ConvBn(mid_chs, mid_chs, kernel_size, stride=stride, groups=mid_chs) for _ in range(REP_BRANCHES)
            )
            self.dw_rpr_scale = ConvBn(mid_chs, mid_chs, 1, stride=stride, groups=mid_chs)
        elif stride > 1:
            self.conv_dw = nn.Conv2d(
                mid_chs, mid_chs, kernel_size, stride, (kernel_size - 1) // 2, groups=mid_chs, bias=False
            )
            self.bn_dw: nn.Module = nn.BatchNorm2d(mid_chs)
        self.se = SqueezeExcite(mid_chs, se_ratio) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_chs, out_chs, act=False, rep=rep)
        self.shortcut = _shortcut(in_chs, out_chs, kernel_size, stride)

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x
        out: torch.Tensor
        if self.multi_branch:
            out = sum((branch(x) for branch in self.dw_rpr_conv), self.dw_rpr_scale(x))
        else:
            out = self.bn_dw(self.conv_dw(x))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._downsample(self.ghost1(x))
        if self.se is not None:
            out = self.se(out)
        residual: torch.Tensor = self.ghost2(out) + self.shortcut(x)
        return residual


def _shortcut(in_chs: int, out_chs: int, kernel_size: int, stride: int) -> nn.Module:
    if in_chs == out_chs and stride == 1:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_chs, in_chs, kernel_size, stride, (kernel_size - 1) // 2, groups=in_chs, bias=False),
        nn.BatchNorm2d(in_chs),
        nn.Conv2d(in_chs, out_chs, 1, bias=False),
        nn.BatchNorm2d(out_chs),
    )


class GhostNet(nn.Module):
    """GhostNet v1/v2/v3 image classifier.

    v3 is built in training form (re-parameterisable branches, timm names); `ghostnet.for_inference`
    fuses it into the v2 inference architecture and folds every BatchNorm.

    Args:
        width: Channel multiplier (0.5, 1.0, 1.3, 1.6 for the registered variants).
        version: "v1", "v2" (adds DFC attention) or "v3" (v2 with re-parameterisable convs).
        num_classes: Classifier outputs.
        in_chans: Input channels.
        drop_rate: Dropout before the classifier, training only.
        meta: Labels and preprocessing; `ghostnet.create_model` always sets it.
    """

    def __init__(
        self,
        *,
        width: float = 1.0,
        version: Version = "v1",
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        meta: ModelMeta | None = None,
    ) -> None:
        super().__init__()
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        if num_classes < 1 or in_chans < 1:
            raise ValueError(f"num_classes and in_chans must be >= 1, got {num_classes} and {in_chans}")
        self.version = version
        self.width = width
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.meta = meta
        self.weights_sha256: str | None = None  # digest of the loaded weights file, if any
        self.inference_form = False

        stem_chs = make_divisible(STEM_CHANNELS * width)
        self.conv_stem = nn.Conv2d(in_chans, stem_chs, 3, 2, 1, bias=False)
        self.bn1: nn.Module = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.blocks, self.num_features = _build_blocks(stem_chs, width, version)
        self.conv_head = nn.Conv2d(self.num_features, HEAD_CHANNELS, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    @property
    def min_input_size(self) -> int:
        """Smallest height and width the model accepts."""
        return 1 if self.version == "v1" else MIN_DFC_INPUT_SIZE

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected input of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"GhostNet{self.version} needs height and width >= {self.min_input_size} px "
                f"(DFC attention pools 2x2 at stride 32), got {tuple(x.shape[-2:])}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and all blocks: the (N, num_features, H/32, W/32) feature map."""
        self._check_input(x)
        features: torch.Tensor = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        return features

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, conv_head + ReLU, dropout, classifier; `pre_logits=True` stops at the 1280-d embedding."""
        x = self.act2(self.conv_head(x.mean((2, 3), keepdim=True))).flatten(1)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_all(self, x: torch.Tensor, *, embeddings: bool) -> InferenceOutput:
        """Logits, optionally the pre-logits embedding, and every channel weight, from one forward pass."""
        from .channel_weights import InferenceOutput, capture_channel_weights

        with capture_channel_weights(self) as channel_weights:
            embedding = self.forward_head(self.forward_features(x), pre_logits=True)
        return InferenceOutput(
            logits=self.classifier(embedding),
            embedding=embedding if embeddings else None,
            channel_weights=channel_weights,
        )


def _build_blocks(stem_chs: int, width: float, version: Version) -> tuple[nn.Sequential, int]:
    stages: list[nn.Module] = []
    in_chs = stem_chs
    block_idx = 0
    for stage in GHOSTNET_LAYOUT:
        layers = []
        for kernel_size, exp, out, se_ratio, stride in stage:
            out_chs = make_divisible(out * width)
            layers.append(
                GhostBottleneck(
                    in_chs,
                    make_divisible(exp * width),
                    out_chs,
                    kernel_size,
                    stride,
                    se_ratio,
                    dfc=version != "v1" and block_idx >= FIRST_DFC_BLOCK,
                    rep=version == "v3",
                )
            )
            in_chs = out_chs
            block_idx += 1
        stages.append(nn.Sequential(*layers))
    # The final 1x1 conv widens to the last row's expansion size.
    final_chs = make_divisible(GHOSTNET_LAYOUT[-1][-1][1] * width)
    stages.append(nn.Sequential(ConvBn(in_chs, final_chs, 1, act=True)))
    return nn.Sequential(*stages), final_chs


def checkpoint_filter_fn(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Map a timm or official Huawei GhostNet checkpoint onto this module tree's keys.

    Unwraps nested `state_dict` / `model` entries, strips a DataParallel `module.` prefix, drops
    profiler counters (`total_ops`, `total_params`) and renames official v3 re-param `bn.` to `bn1.`.
    """
    state_dict: Mapping[str, Any] = checkpoint
    while True:
        nested = next((state_dict[k] for k in ("state_dict", "model") if k in state_dict), None)
        if not isinstance(nested, Mapping):
            break
        state_dict = nested
    filtered: dict[str, Any] = {}
    for key, value in state_dict.items():
        if "total" in key:
            continue
        key = key.removeprefix("module.")
        if "bn." in key and (".ghost" in key or ".dw_rpr_" in key):
            key = key.replace("bn.", "bn1.")
        filtered[key] = value
    return filtered

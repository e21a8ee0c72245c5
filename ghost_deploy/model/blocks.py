"""Building blocks shared by GhostNet V1, V2 and V3, with the module names of the official code and timm.

Module and attribute names are the state_dict keys, so they follow huawei-noah's `ghostnet_pytorch`,
`ghostnetv2_pytorch` and timm's `ghostnet.py` exactly. Only imported where torch is installed (extra `export`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(v: float, divisor: int = 4, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% below `v` (official rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation on the bottleneck's mid channels, gated by hard-sigmoid."""

    def __init__(self, in_chs: int, se_ratio: float = 0.25, divisor: int = 4) -> None:
        super().__init__()
        reduced_chs = make_divisible(in_chs * se_ratio, divisor)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(in_chs, reduced_chs, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced_chs, in_chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_se = self.conv_expand(self.act1(self.conv_reduce(self.avg_pool(x))))
        return x * F.hardsigmoid(x_se)


class ConvBnAct(nn.Module):
    """Conv (no bias), BatchNorm, ReLU: the final 1x1 expansion before the head."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act1(self.bn1(self.conv(x)))
        return out


class ConvBn(nn.Module):
    """Conv (no bias) and BatchNorm under timm's names `conv` / `bn1`: one re-parameterisable V3 branch."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn1(self.conv(x))
        return out


class GhostModule(nn.Module):
    """A primary conv makes half the channels, a cheap depthwise conv the other half."""

    def __init__(
        self,
        inp: int,
        oup: int,
        kernel_size: int = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: int = 1,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.oup = oup
        init_channels = math.ceil(oup / ratio)
        new_channels = init_channels * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, init_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(init_channels),
            nn.ReLU(inplace=True) if relu else nn.Sequential(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_channels, new_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=False),
            nn.BatchNorm2d(new_channels),
            nn.ReLU(inplace=True) if relu else nn.Sequential(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)
        # A no-op for every width built from CFGS (all channel counts are even); kept for key/behaviour
        # parity with the official code, and removed from the ONNX graph by `simplify`.
        return out[:, : self.oup, :, :]


def short_conv(in_chs: int, out_chs: int) -> nn.Sequential:
    """DFC attention's branch: 1x1 conv + BN, then 1x5 and 5x1 depthwise convs + BN ('short_conv.0'..'5')."""
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.Conv2d(out_chs, out_chs, (1, 5), 1, (0, 2), groups=out_chs, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.Conv2d(out_chs, out_chs, (5, 1), 1, (2, 0), groups=out_chs, bias=False),
        nn.BatchNorm2d(out_chs),
    )


def dfc_gate(branch: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Gate `out` by DFC attention computed from the module input `x` at half resolution.

    Average pool by 2, the branch, sigmoid, nearest upsample back to the size of `out` (as the official
    code). Sizes are read as Python ints, so an export for a fixed input size has constant spatial sizes: an
    exact doubling exports as a Resize with constant scales (no Shape ops, whatever the batch), any other
    size (7 -> 3 -> 7 at 224 input) as a Resize to constant H, W (the batch dimension read from Shape).
    """
    res = torch.sigmoid(branch(F.avg_pool2d(x, kernel_size=2, stride=2)))
    size = (int(out.shape[-2]), int(out.shape[-1]))
    if size == (2 * int(res.shape[-2]), 2 * int(res.shape[-1])):
        return out * F.interpolate(res, scale_factor=2.0, mode="nearest")
    return out * F.interpolate(res, size=size, mode="nearest")


class GhostModuleV2(GhostModule):
    """GhostNetV2's ghost module: a GhostModule (with ReLU) gated by DFC attention (official mode 'attn')."""

    def __init__(self, inp: int, oup: int) -> None:
        super().__init__(inp, oup, relu=True)
        self.short_conv = short_conv(inp, oup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dfc_gate(self.short_conv, x, super().forward(x))


def shortcut(in_chs: int, out_chs: int, dw_kernel_size: int, stride: int) -> nn.Sequential:
    """A bottleneck's shortcut: identity (empty) when shapes match, else depthwise k x k + BN, 1x1 conv + BN."""
    if in_chs == out_chs and stride == 1:
        return nn.Sequential()
    pad = (dw_kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride, pad, groups=in_chs, bias=False),
        nn.BatchNorm2d(in_chs),
        nn.Conv2d(in_chs, out_chs, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_chs),
    )


class GhostBottleneck(nn.Module):
    """Ghost bottleneck: ghost1 (expand), optional stride-2 depthwise, optional SE, ghost2, shortcut add.

    With `attention` (GhostNetV2 from the third bottleneck on), ghost1 carries the DFC attention gate.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        attention: bool = False,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModuleV2(in_chs, mid_chs) if attention else GhostModule(in_chs, mid_chs, relu=True)
        if stride > 1:
            pad = (dw_kernel_size - 1) // 2
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, pad, groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        self.se = SqueezeExcite(mid_chs, se_ratio=se_ratio) if se_ratio is not None and se_ratio > 0.0 else None
        self.ghost2 = GhostModule(mid_chs, out_chs, relu=False)
        self.shortcut = shortcut(in_chs, out_chs, dw_kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.ghost1(x)
        if self.stride > 1:
            x = self.bn_dw(self.conv_dw(x))
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)
        out: torch.Tensor = x + self.shortcut(residual)
        return out

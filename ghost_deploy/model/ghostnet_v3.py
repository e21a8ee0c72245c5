"""GhostNetV3's re-parameterisable modules, and the fusion of their training-time branches for deployment.

At training time every ghost module convolution is a sum of branches: three k x k conv+BN branches, a 1x1
conv+BN "scale" branch (cheap depthwise convs only) and a BN "skip" branch (identity; cheap convs only),
and the stride-2 depthwise conv of a bottleneck has three k x k branches plus a 1x1 one. All of them are
linear, so each sum equals one conv with bias (RepVGG's argument); `reparameterize` computes those convs.

State_dict names follow timm (`primary_rpr_conv.0.conv`, `.bn1`, `cheap_rpr_skip`, ...); the official
release names the branch BatchNorms `bn` instead of `bn1`, which `checkpoint.py` renames on load. Two traps of
the peers are avoided: the result of fusing is what is returned and used (timm's `convert_to_deploy()` throws
it away), and the network keeps the batch dimension at batch 1 (the official `forward` ends in `squeeze()`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ghost_deploy.model.blocks import ConvBn, GhostModule, SqueezeExcite, dfc_gate, short_conv, shortcut

NUM_CONV_BRANCHES = 3


def _conv_of(branch: nn.Module) -> nn.Conv2d:
    conv = branch.conv if isinstance(branch, ConvBn) else branch
    assert isinstance(conv, nn.Conv2d)
    return conv


def _fused_conv(branches: Iterable[nn.Module], kernel: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A conv with bias of the first branch's geometry, holding `kernel` and `bias`."""
    template = _conv_of(next(iter(branches)))
    conv = nn.Conv2d(
        template.in_channels,
        template.out_channels,
        template.kernel_size,  # type: ignore[arg-type]
        template.stride,  # type: ignore[arg-type]
        template.padding,  # type: ignore[arg-type]
        groups=template.groups,
        bias=True,
        device=template.weight.device,
        dtype=template.weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(kernel.to(conv.weight.dtype))
        assert conv.bias is not None
        conv.bias.copy_(bias.to(conv.weight.dtype))
    return conv


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) of an eval-mode BatchNorm, in float64."""
    assert bn.running_mean is not None and bn.running_var is not None
    std = (bn.running_var.double() + bn.eps).sqrt()
    scale = bn.weight.double() / std
    return scale, bn.bias.double() - bn.running_mean.double() * scale


def fuse_branches(
    convs: Iterable[nn.Module], scale: nn.Module | None = None, skip: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias (float64) of one conv equal to the sum of the branches' outputs in eval mode.

    `convs` share one k x k geometry; `scale` is a 1x1 branch with the same stride and groups (padded to
    k x k around the centre); `skip` is an identity BatchNorm (needs in == out channels and stride 1).
    """
    branches = [*convs, *([scale] if scale is not None else [])]
    assert all(isinstance(b, ConvBn) for b in branches)
    template = _conv_of(branches[0])
    kernel = torch.zeros(template.weight.shape, dtype=torch.float64)
    bias = torch.zeros(template.out_channels, dtype=torch.float64)
    for branch in branches:
        assert isinstance(branch, ConvBn)
        s, shift = _bn_scale_shift(branch.bn1)
        w = branch.conv.weight.double() * s.reshape(-1, 1, 1, 1)
        pad_h = (kernel.shape[2] - w.shape[2]) // 2
        pad_w = (kernel.shape[3] - w.shape[3]) // 2
        kernel += F.pad(w, [pad_w, pad_w, pad_h, pad_h])
        bias += shift
    if skip is not None:
        assert isinstance(skip, nn.BatchNorm2d)
        s, shift = _bn_scale_shift(skip)
        per_group = kernel.shape[1]
        centre_h, centre_w = kernel.shape[2] // 2, kernel.shape[3] // 2
        for channel in range(kernel.shape[0]):
            kernel[channel, channel % per_group, centre_h, centre_w] += s[channel]
        bias += shift
    return kernel, bias


class GhostModuleV3(GhostModule):
    """Ghost module with re-parameterisable primary and cheap convs; `attention` adds the DFC gate.

    Built `fused=True`, it has the deployed form directly (what `fuse()` leaves): `primary_conv` and
    `cheap_operation` as conv-with-bias + activation, for loading an already re-parameterised checkpoint.
    """

    def __init__(self, inp: int, oup: int, relu: bool = True, attention: bool = False, fused: bool = False) -> None:
        super().__init__(inp, oup, relu=relu)
        init_channels = new_channels = math.ceil(oup / 2)  # ratio 2, as every GhostNet
        self.fused = fused
        if fused:
            self.primary_conv = nn.Sequential(nn.Conv2d(inp, init_channels, 1, 1, 0, bias=True), self.primary_conv[2])
            self.cheap_operation = nn.Sequential(
                nn.Conv2d(init_channels, new_channels, 3, 1, 1, groups=init_channels, bias=True),
                self.cheap_operation[2],
            )
        else:
            del self.primary_conv, self.cheap_operation
            self.primary_rpr_conv = nn.ModuleList(ConvBn(inp, init_channels, 1) for _ in range(NUM_CONV_BRANCHES))
            self.primary_activation = nn.ReLU(inplace=True) if relu else nn.Identity()
            self.cheap_rpr_skip = nn.BatchNorm2d(init_channels)
            self.cheap_rpr_conv = nn.ModuleList(
                ConvBn(init_channels, new_channels, 3, groups=init_channels) for _ in range(NUM_CONV_BRANCHES)
            )
            self.cheap_rpr_scale = ConvBn(init_channels, new_channels, 1, groups=init_channels)
            self.cheap_activation = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.short_conv = short_conv(inp, oup) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            out = super().forward(x)
        else:
            x1 = self.primary_rpr_conv[0](x)
            for branch in self.primary_rpr_conv[1:]:
                x1 = x1 + branch(x)
            x1 = self.primary_activation(x1)
            x2 = self.cheap_rpr_scale(x1) + self.cheap_rpr_skip(x1)
            for branch in self.cheap_rpr_conv:
                x2 = x2 + branch(x1)
            out = torch.cat([x1, self.cheap_activation(x2)], dim=1)[:, : self.oup, :, :]
        return dfc_gate(self.short_conv, x, out) if self.short_conv is not None else out

    def fuse(self) -> None:
        """Replace the training-time branches by one conv with bias each (in place; a no-op when fused)."""
        if self.fused:
            return
        primary = _fused_conv(self.primary_rpr_conv, *fuse_branches(self.primary_rpr_conv))
        cheap = _fused_conv(
            self.cheap_rpr_conv, *fuse_branches(self.cheap_rpr_conv, self.cheap_rpr_scale, self.cheap_rpr_skip)
        )
        self.primary_conv = nn.Sequential(primary, self.primary_activation)
        self.cheap_operation = nn.Sequential(cheap, self.cheap_activation)
        del self.primary_rpr_conv, self.primary_activation, self.cheap_rpr_skip, self.cheap_rpr_conv
        del self.cheap_rpr_scale, self.cheap_activation
        self.fused = True


class GhostBottleneckV3(nn.Module):
    """GhostNetV3 bottleneck: re-parameterisable ghost modules and stride-2 depthwise conv, SE, shortcut."""

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        attention: bool = False,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.fused = fused
        self.ghost1 = GhostModuleV3(in_chs, mid_chs, relu=True, attention=attention, fused=fused)
        pad = (dw_kernel_size - 1) // 2
        if stride > 1 and fused:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, pad, groups=mid_chs, bias=True)
        elif stride > 1:
            self.dw_rpr_conv = nn.ModuleList(
                ConvBn(mid_chs, mid_chs, dw_kernel_size, stride, groups=mid_chs) for _ in range(NUM_CONV_BRANCHES)
            )
            self.dw_rpr_scale = ConvBn(mid_chs, mid_chs, 1, stride, groups=mid_chs)
        self.se = SqueezeExcite(mid_chs, se_ratio=se_ratio) if se_ratio > 0.0 else None
        self.ghost2 = GhostModuleV3(mid_chs, out_chs, relu=False, fused=fused)
        self.shortcut = shortcut(in_chs, out_chs, dw_kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.ghost1(x)
        if self.stride > 1 and self.fused:
            x = self.conv_dw(x)
        elif self.stride > 1:
            dw = self.dw_rpr_scale(x)
            for branch in self.dw_rpr_conv:
                dw = dw + branch(x)
            x = dw
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)
        out: torch.Tensor = x + self.shortcut(residual)
        return out

    def fuse(self) -> None:
        """Fuse the depthwise branches (the ghost modules fuse themselves); in place."""
        if self.fused:
            return
        if self.stride > 1:
            self.conv_dw = _fused_conv(self.dw_rpr_conv, *fuse_branches(self.dw_rpr_conv, self.dw_rpr_scale))
            del self.dw_rpr_conv, self.dw_rpr_scale
        self.fused = True


def has_training_branches(model: nn.Module) -> bool:
    """True when the model holds GhostNetV3 branches that `reparameterize` would fuse."""
    return any(isinstance(m, (GhostModuleV3, GhostBottleneckV3)) and not m.fused for m in model.modules())


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The deployable model: every V3 branch sum fused into one conv with bias; use what this returns.

    With `inplace=False` (the default) the input model is left as it was and a fused copy is returned.
    """
    target = model if inplace else copy.deepcopy(model)
    was_training = target.training
    target.eval()
    with torch.no_grad():
        for module in list(target.modules()):
            if isinstance(module, (GhostModuleV3, GhostBottleneckV3)):
                module.fuse()
    target.train(was_training)
    return target


def deployable(model: nn.Module) -> nn.Module:
    """The model as it is deployed: a fused copy when it has V3 training-time branches, else the model itself."""
    return reparameterize(model) if has_training_branches(model) else model

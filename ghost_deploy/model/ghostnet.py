"""The GhostNet family in PyTorch (V1, V2 with DFC attention, V3 with re-parameterisable branches), with the
module names and state_dict keys of the official implementations and timm.

Checkpoints trained with huawei-noah's `ghostnet_pytorch`, `ghostnetv2_pytorch` or timm's `ghostnet*` load
as-is; official V3 checkpoints load after the rename in `checkpoint.py`. The SE gate uses `F.hardsigmoid`,
which ONNX export maps to `HardSigmoid(alpha=1/6, beta=0.5)`: the same function as the official
`relu6(x + 3) / 6`, as one node instead of Add/Clip/Div.

Only imported where torch is installed (extra `export`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ghost_deploy.model.blocks import ConvBnAct, GhostBottleneck, make_divisible
from ghost_deploy.model.ghostnet_v3 import GhostBottleneckV3

VERSIONS = ("v1", "v2", "v3")
# V2 and V3 put DFC attention on ghost1 of every bottleneck after the first two (official `layer_id > 1`)
FIRST_ATTENTION_BLOCK = 2

# k, t (mid channels), c (out channels), SE ratio, stride; one inner list per nn.Sequential of `blocks`
CFGS: list[list[tuple[int, int, int, float, int]]] = [
    [(3, 16, 16, 0, 1)],
    [(3, 48, 24, 0, 2)],
    [(3, 72, 24, 0, 1)],
    [(5, 72, 40, 0.25, 2)],
    [(5, 120, 40, 0.25, 1)],
    [(3, 240, 80, 0, 2)],
    [
        (3, 200, 80, 0, 1),
        (3, 184, 80, 0, 1),
        (3, 184, 80, 0, 1),
        (3, 480, 112, 0.25, 1),
        (3, 672, 112, 0.25, 1),
    ],
    [(5, 672, 160, 0.25, 2)],
    [
        (5, 960, 160, 0, 1),
        (5, 960, 160, 0.25, 1),
        (5, 960, 160, 0, 1),
        (5, 960, 160, 0.25, 1),
    ],
]
HEAD_CHANNELS = 1280


class GhostNet(nn.Module):
    """GhostNet for `num_classes` classes at width multiplier `width`.

    `version` 'v1' (Han et al., CVPR 2020), 'v2' (DFC attention, NeurIPS 2022) or 'v3' (re-parameterisable
    branches, arXiv 2404.11202; `fused=True` builds the deployed form that `reparameterize` produces).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        dropout: float = 0.2,
        version: str = "v1",
        fused: bool = False,
    ) -> None:
        super().__init__()
        if version not in VERSIONS:
            raise ValueError(f"unknown GhostNet version {version!r}; known: {', '.join(VERSIONS)}")
        self.num_classes = num_classes
        self.width = width
        self.dropout = dropout
        self.version = version
        output_channel = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(3, output_channel, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(output_channel)
        self.act1 = nn.ReLU(inplace=True)
        input_channel = output_channel
        stages: list[nn.Module] = []
        exp_size = 16
        layer_id = 0
        for cfg in CFGS:
            layers: list[nn.Module] = []
            for k, exp_size, c, se_ratio, s in cfg:
                output_channel = make_divisible(c * width, 4)
                hidden_channel = make_divisible(exp_size * width, 4)
                attention = version != "v1" and layer_id >= FIRST_ATTENTION_BLOCK
                shape = (input_channel, hidden_channel, output_channel, k, s, se_ratio)
                if version == "v3":
                    layers.append(GhostBottleneckV3(*shape, attention=attention, fused=fused))
                else:
                    layers.append(GhostBottleneck(*shape, attention=attention))
                input_channel = output_channel
                layer_id += 1
            stages.append(nn.Sequential(*layers))
        output_channel = make_divisible(exp_size * width, 4)
        stages.append(nn.Sequential(ConvBnAct(input_channel, output_channel, 1)))
        self.blocks = nn.Sequential(*stages)
        self.global_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.conv_head = nn.Conv2d(output_channel, HEAD_CHANNELS, 1, 1, 0, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        x = self.act2(self.conv_head(self.global_pool(x)))
        x = torch.flatten(x, 1)
        if self.dropout > 0.0:
            x = F.dropout(x, p=self.dropout, training=self.training)
        logits: torch.Tensor = self.classifier(x)
        return logits


def stem_channels(width: float) -> int:
    """Output channels of `conv_stem` at a width multiplier."""
    return make_divisible(16 * width, 4)


def last_channels(width: float) -> int:
    """Output channels of the final ConvBnAct (`blocks.9.0`) at a width multiplier."""
    return make_divisible(960 * width, 4)

"""GhostNets with random weights but realistic activations, for tests and benchmarks.

A freshly initialised network has BatchNorm statistics of 0/1 and logits of about 0.07, where an error
bound of 1e-4 proves little. Here the BatchNorm running statistics come from real images and the classifier
is scaled so the logits span several units, like a trained model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ghost_deploy import optional

if TYPE_CHECKING:
    from ghost_deploy.model.ghostnet import GhostNet


def realistic_ghostnet(
    images: np.ndarray,
    width: float = 1.0,
    num_classes: int = 1000,
    seed: int = 0,
    logit_std: float = 3.0,
    version: str = "v1",
) -> GhostNet:
    """An eval-mode GhostNet (V1, V2 or V3) whose BatchNorm statistics are measured on `images` (N x 3 x S x S).

    BatchNorm scales and shifts are drawn at random too (near 1 and 0), so that every BatchNorm matters:
    folding it into a conv, or fusing V3's branches, is tested on more than an identity.
    """
    torch = optional.torch("Building a GhostNet")
    from ghost_deploy.model.ghostnet import GhostNet

    torch.manual_seed(seed)
    model = GhostNet(num_classes=num_classes, width=width, version=version)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over all batches
            with torch.no_grad():
                module.weight.uniform_(0.8, 1.2)
                module.bias.uniform_(-0.1, 0.1)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    model.train()
    with torch.no_grad():
        for start in range(0, len(x), 16):
            model(x[start : start + 16])
    model.eval()
    with torch.no_grad():
        logits = model(x[:64])
        scale = logit_std / float(logits.std().clamp_min(1e-12))
        model.classifier.weight.mul_(scale)
        model.classifier.bias.mul_(scale)
    return model

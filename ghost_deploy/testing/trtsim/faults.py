"""Test-only faults the simulator puts into the engines it builds, switched on by environment variables.

Neither exists in TensorRT and nothing in the product sets them; they let tests see what the product does
when a device misbehaves in ways a faithful simulation never would on its own:

- `GHOST_DEPLOY_SIMULATE_WRONG_ENGINE=1`: every engine built while it is set gives wrong answers: its logits
  come out in reversed class order (a device whose TensorRT picked a broken tactic; NVIDIA/TensorRT has many
  such reports). The plan builds, deserializes and runs normally; only its outputs are wrong. Its header
  records `"fault": "wrong-outputs"`, so a test can tell that the simulator, not the product, made it so.
- `GHOST_DEPLOY_SIMULATE_BUILD_SECONDS=S`: every build takes S seconds longer (the builder sleeps before
  returning the plan), so that a test can start two builds at once, or kill a process halfway through one.

Both are read when a build finishes, in this module only: the rest of the simulator knows nothing of them.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ghost_deploy.testing.trtsim.plan import decode_plan, encode_plan

ENV_WRONG = "GHOST_DEPLOY_SIMULATE_WRONG_ENGINE"
ENV_BUILD_SECONDS = "GHOST_DEPLOY_SIMULATE_BUILD_SECONDS"
_TRUE = ("1", "true", "yes", "on")


def apply_build_faults(plan: bytes) -> bytes:
    """The plan a build returns, with the faults the environment asks for applied (usually unchanged)."""
    delay = _seconds(os.environ.get(ENV_BUILD_SECONDS, ""))
    if delay:
        time.sleep(delay)
    if os.environ.get(ENV_WRONG, "").strip().lower() not in _TRUE:
        return plan
    header, onnx_bytes = decode_plan(plan)
    return encode_plan({**header, "fault": "wrong-outputs"}, reversed_classes(onnx_bytes))


def _seconds(text: str) -> float:
    """A non-negative number of seconds; anything else is a mistake in the test, said loudly."""
    if not text.strip():
        return 0.0
    value = float(text)
    if not 0.0 <= value <= 3600.0:
        raise ValueError(f"{ENV_BUILD_SECONDS} must be 0 to 3600 seconds, got {text!r}")
    return value


def reversed_classes(onnx_bytes: bytes) -> bytes:
    """The model with its first output's last axis reversed (class i reports class C-1-i's logit)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    output = model.graph.output[0]
    dims = output.type.tensor_type.shape.dim
    if not dims or not dims[-1].HasField("dim_value"):
        raise ValueError("the wrong-engine fault needs an output whose last dimension (the classes) is fixed")
    classes = dims[-1].dim_value
    true_name = output.name + "__trtsim_true"
    for node in model.graph.node:
        node.output[:] = [true_name if name == output.name else name for name in node.output]
    order = numpy_helper.from_array(np.arange(classes - 1, -1, -1, dtype=np.int64), name=output.name + "__trtsim_order")
    model.graph.initializer.append(order)
    axis = len(dims) - 1
    model.graph.node.append(
        helper.make_node("Gather", [true_name, order.name], [output.name], name="trtsim/fault", axis=axis)
    )
    return bytes(model.SerializeToString())

"""The one place where optional heavy dependencies are imported, each with the extra that provides it."""

from __future__ import annotations

import importlib
from types import ModuleType

from ghost_deploy.errors import MissingDependencyError

# module -> extra of ghost-deploy that installs it
_EXTRAS = {
    "torch": "export",
    "onnxsim": "export",
    "tensorrt": "trt",
    "pycuda": "trt",
    "matplotlib": "plot",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` or raise MissingDependencyError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the module exists but one of its own imports is broken: show the real cause
        raise MissingDependencyError(module, _EXTRAS.get(module, module), purpose) from exc


def torch(purpose: str = "Loading a PyTorch checkpoint") -> ModuleType:
    """Import torch, or raise MissingDependencyError naming the `export` extra."""
    return require("torch", purpose)

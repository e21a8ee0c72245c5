"""The one place where optional heavy dependencies are imported, each with the extra that provides it."""

from __future__ import annotations

import importlib
import sys
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


def onnxsim(purpose: str = "Simplifying ONNX") -> ModuleType:
    """Import onnxsim without letting it load torch when torch is not loaded yet.

    onnxsim's package `__init__` tries `import torch` (inside try/except) for an optional PPQ integration that
    it never uses here: 250 MB of resident memory and 2.5 s for a job that starts from an ONNX file. For the
    moment of that import, torch is marked absent, as Python's import system allows; nothing else is changed.
    """
    if "onnxsim" in sys.modules or "torch" in sys.modules:
        return require("onnxsim", purpose)
    sys.modules["torch"] = None  # type: ignore[assignment]  # None in sys.modules: `import torch` raises ImportError
    try:
        return require("onnxsim", purpose)
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]

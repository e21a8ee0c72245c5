"""The one place where optional heavy dependencies are imported, each with the extra that provides it.

A package that is not installed is exit 3, naming the extra. One that is installed but cannot be loaded is not
missing, and installing it again would not help: torch under an address-space limit (`ulimit -v`, a container's
RLIMIT_AS) cannot map its 500 MB of shared libraries and raises ImportError, MemoryError or OSError from its own
imports. That is exit 1 (StepFailed), one line saying what failed to load and, when the process runs under such a
limit, the limit, so the user raises it instead of reinstalling.
"""

from __future__ import annotations

import importlib
import importlib.util
import resource
import sys
from types import ModuleType

from ghost_deploy.errors import MissingDependencyError, StepFailed

# module -> extra of ghost-deploy that installs it
_EXTRAS = {
    "torch": "export",
    "onnxsim": "export",
    "tensorrt": "trt",
    "pycuda": "trt",
    "matplotlib": "plot",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`; MissingDependencyError (exit 3) naming the extra that installs it when it is not
    installed, StepFailed (exit 1) when it is installed but cannot be loaded (see the module's docstring)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != module.split(".")[0]:
            raise _not_loaded(module, purpose, exc) from exc  # installed, but a package it needs is not
        raise MissingDependencyError(module, _EXTRAS.get(module, module), purpose) from exc
    except (ImportError, MemoryError, OSError) as exc:
        if isinstance(exc, ImportError) and not _installed(module):
            raise MissingDependencyError(module, _EXTRAS.get(module, module), purpose) from exc
        raise _not_loaded(module, purpose, exc) from exc


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):  # None in sys.modules (marked absent): not available
        return False


def _not_loaded(module: str, purpose: str, exc: BaseException) -> StepFailed:
    """The error for a `module` that is installed but failed to load, with what to do about it."""
    cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        advice = (
            f"this process may use at most {limit >> 20} MiB of address space (ulimit -v / RLIMIT_AS) and "
            f"{module} needs more to load: raise the limit"
        )
    elif isinstance(exc, MemoryError):
        advice = "the machine is out of memory: free some and rerun"
    else:
        advice = f"the installation looks broken: reinstall it (pip install --force-reinstall {module})"
    return StepFailed(f"{purpose} needs '{module}', which is installed but could not be loaded ({cause}); {advice}")


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

"""One runner interface for every backend: input specs, `infer(feeds) -> outputs`, a context manager."""

from ghost_deploy.runners.base import Runner, TensorSpec

__all__ = ["Runner", "TensorSpec"]

"""ghost-deploy: GhostNet from PyTorch to ONNX and TensorRT, verified, profiled and packed for the edge.

Importing this package imports neither torch nor TensorRT; the functions that need them import them when
called and raise `MissingDependencyError` naming the extra to install.
"""

__version__ = "0.1.0"

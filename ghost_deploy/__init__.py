"""ghost-deploy: GhostNet from PyTorch to ONNX and TensorRT, verified, profiled and packed for the edge.

The public API, imported on first use (importing this package imports neither torch, onnx, onnxruntime nor
TensorRT; the functions that need them import them when called and raise `MissingDependencyError` naming the
extra to install):

    export(model, config)        -> ExportResult   any target: an ONNX artifact or a TensorRT engine
    build(onnx, config)          -> ExportResult   an engine from an ONNX made by export (on the device)
    verify(artifact, reference)  -> dict           the comparator on its own
    profile(artifact, config)    -> dict           latency like trtexec
    pack(artifacts, output)      -> dict           a deployment bundle
    Bundle.open(path)                              what an application uses to run a bundle

The configurations are in `ghost_deploy.config`; the folders of the package are described in README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ghost_deploy.version import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from ghost_deploy.bundle.runtime import Bundle
    from ghost_deploy.config import ExportConfig
    from ghost_deploy.report import Steps
    from ghost_deploy.stages.export_onnx import ExportResult

__all__ = ["Bundle", "__version__", "build", "export", "pack", "profile", "verify"]


def export(model: Path, config: ExportConfig, steps: Steps | None = None) -> ExportResult:
    """`ghost-export MODEL --target T`: the artifact of `config.target` from a checkpoint or an ONNX file.

    `steps` times the steps and prints progress (standard error by default)."""
    from ghost_deploy.targets import target

    if target(config.target).is_engine:
        from ghost_deploy.stages.export_engine import export_engine

        return export_engine(model, config, steps)
    from ghost_deploy.stages.export_onnx import export_model

    return export_model(model, config, steps)


def build(onnx_path: Path, config: ExportConfig, steps: Steps | None = None) -> ExportResult:
    """`ghost-deploy build`: a TensorRT engine from an ONNX file that export wrote."""
    from ghost_deploy.stages.export_engine import build_engine

    return build_engine(onnx_path, config, steps)


def verify(artifact: Path, reference: Path, **options: Any) -> dict[str, Any]:
    """`ghost-deploy verify`: compare an ONNX artifact with a checkpoint or FP32 ONNX (see `verify_artifact`)."""
    from ghost_deploy.stages.verify_artifact import verify_artifact

    return verify_artifact(artifact, reference, **options)


def profile(artifact: Path, config: Any = None) -> dict[str, Any]:
    """`ghost-deploy profile`: latency of an ONNX, a checkpoint or an engine (config: a ProfileConfig)."""
    from ghost_deploy.profiling.profile import ProfileConfig, profile_artifact

    return profile_artifact(artifact, config or ProfileConfig())


def pack(artifacts: list[Path], output: Path, **options: Any) -> dict[str, Any]:
    """`ghost-deploy pack`: a bundle of artifacts (a directory, or a .tar.gz when `output` ends so)."""
    from ghost_deploy.bundle.pack import pack as pack_bundle

    return pack_bundle(artifacts, output, **options)


def __getattr__(name: str) -> Any:
    """`ghost_deploy.Bundle`, imported on first use."""
    if name == "Bundle":
        from ghost_deploy.bundle.runtime import Bundle

        return Bundle
    raise AttributeError(f"module 'ghost_deploy' has no attribute {name!r}")

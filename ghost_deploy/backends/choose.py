"""Which runner opens an artifact: `runner_for(path)` by the file's extension (ONNX, checkpoint or engine)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ghost_deploy.backends.base import Runner
from ghost_deploy.errors import InputError

# artifact kinds by file extension: what runner_for opens
KINDS = {".onnx": "onnx", ".pt": "pytorch", ".pth": "pytorch", ".engine": "tensorrt", ".plan": "tensorrt"}


def kind_of(path: Path) -> str:
    """'onnx', 'pytorch' or 'tensorrt' by the file's extension; InputError for anything else."""
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"{path.name}: unknown artifact type {path.suffix or '(no extension)'!r}; expected "
            ".onnx (ONNX Runtime), .pt/.pth (PyTorch) or .engine/.plan (TensorRT)"
        )
    return kind


def runner_for(
    path: Path,
    *,
    threads: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    spin: bool = False,
    trust: bool = False,
    input_size: int | None = None,
) -> Runner:
    """The runner of an artifact, by its extension: ONNX Runtime, PyTorch eager (a checkpoint, loaded with its
    metadata; GhostNetV3 fused as it is deployed) or TensorRT. Nothing is loaded until the runner is used,
    except a checkpoint, which is read here. `input_size` is a checkpoint's, as `--input-size` gives it to
    export; an ONNX file or an engine fixes its own (refused)."""
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; check the path")
    kind = kind_of(path)
    if input_size is not None and kind != "pytorch":
        raise InputError(
            f"--input-size applies to a checkpoint (.pt/.pth); {path.name} fixes its own input size: drop it"
        )
    if kind == "onnx":
        from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, providers=providers, threads=threads, spin=spin)
    if kind == "tensorrt":
        from ghost_deploy.backends.trt.runner import TensorRTRunner

        return TensorRTRunner(path)
    from ghost_deploy.backends.pytorch import TorchRunner

    return TorchRunner.from_checkpoint(path, threads=threads, trust=trust, input_size=input_size)

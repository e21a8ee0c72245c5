"""Checkpoints to models: every common state_dict form, our metadata, architecture inference.

`torch.load(weights_only=True)` always; a pickled module or TorchScript only with `trust=True`, because
unpickling can run arbitrary code. Imports torch (extra `export`) when called.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghost_deploy import optional
from ghost_deploy.config import Overrides
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.errors import CheckpointError, InputError
from ghost_deploy.fileio import atomic_file, open_regular
from ghost_deploy.model.assumptions import Hints, assumed_defaults, check_hints, foreign_hints
from ghost_deploy.model.info import METADATA_KEY, STATED_BY, ModelInfo, apply_overrides
from ghost_deploy.model.variants import FAMILY_PREFIX, VARIANTS, check_input_size, variant_for_width

__all__ = [
    "LoadedModel",
    "build_ghostnet",
    "check_shapes",
    "check_tensor_kinds",
    "infer_layout",
    "infer_width",
    "load_model",
    "save_checkpoint",
]

if TYPE_CHECKING:
    import torch

NESTED_KEYS = ("state_dict", "model", "model_state_dict")
_FAMILY_NAMES = {
    "v1": "GhostNet (V1)",
    "v2": "GhostNetV2 (DFC attention: short_conv)",
    "v3": "GhostNetV3 (re-parameterisable branches)",
}
_TRUST_HINT = (
    "unpickling runs code stored in the file, so a malicious checkpoint can take over this machine; "
    "if you trust where it came from, pass --trust-checkpoint"
)


@dataclasses.dataclass
class LoadedModel:
    """A model in eval mode on the CPU and what is known about it."""

    module: torch.nn.Module
    info: ModelInfo
    checkpoint_form: str  # e.g. "state_dict", "state_dict under 'model', module. prefix", "pickled module"
    assumed: dict[str, str] = dataclasses.field(default_factory=dict)  # defaults taken: the file does not say


def load_model(
    path: Path, overrides: Overrides | None = None, *, trust: bool = False, allow_nonfinite: bool = False
) -> LoadedModel:
    """Load a checkpoint into an eval-mode model, with its architecture from metadata, flags or shapes.

    Weights or buffers holding NaN or Inf are refused (CheckpointError, exit 2) unless `allow_nonfinite`:
    such a model's outputs are not numbers, and no verification of them means anything.
    """
    loaded = _load_model(path, overrides or Overrides(), trust)
    if not allow_nonfinite:
        check_finite_weights(loaded.module, path)
    return loaded


def check_finite_weights(module: torch.nn.Module, path: Path) -> None:
    """CheckpointError naming the tensors of `module` (parameters and buffers) that hold NaN or Inf."""
    torch = optional.torch()
    bad: list[str] = []
    count = 0
    for name, tensor in (*module.named_parameters(), *module.named_buffers()):
        if tensor.is_floating_point():
            finite = torch.isfinite(tensor.detach())
            if not bool(finite.all()):
                bad.append(name)
                count += int((~finite).sum())
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(
            f"{path} holds {count} non-finite weights (NaN or Inf) in {len(bad)} tensors: {', '.join(bad[:3])}{more}; "
            "its outputs cannot be verified. Fix the file (or the training run that wrote it), or pass "
            "--allow-nonfinite-weights to load it anyway"
        )


def _load_model(path: Path, overrides: Overrides, trust: bool) -> LoadedModel:
    torch = optional.torch()
    _check_file(path)
    obj = _torch_load(torch, path, trust)
    if isinstance(obj, torch.nn.Module):
        form = "TorchScript" if _is_torchscript(path) else "pickled module"
        return _trusted_module(torch, obj, overrides, form, {}, path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict; save model.state_dict()")
    meta = obj.get(METADATA_KEY)
    hints = {} if isinstance(meta, Mapping) else foreign_hints(obj)  # only where our metadata is absent
    state, form = _find_state_dict(torch, obj, path)
    if isinstance(state, torch.nn.Module):
        if not trust:
            raise CheckpointError(f"{path} holds a pickled module, not a state_dict; {_TRUST_HINT}")
        return _trusted_module(torch, state, overrides, "pickled module", hints, path)
    state, prefix_note = _clean_keys(state)
    check_tensor_kinds(torch, state, path)
    family, fused = infer_layout(state)
    info, assumed = _resolve_info(state, meta if isinstance(meta, Mapping) else None, overrides, path, family, hints)
    check_hints(hints, info, overrides, path)
    check_shapes(info, state, path)  # before anything is allocated from the info
    module = build_ghostnet(info, fused=fused)
    _load_strict(torch, module, state, info, path)
    module.eval()
    return LoadedModel(module, info, form + prefix_note, assumed)


def build_ghostnet(info: ModelInfo, fused: bool = False) -> torch.nn.Module:
    """A freshly initialised GhostNet for `info` (family, width and classes); `fused`: V3 in deployed form."""
    optional.torch("Building a GhostNet")
    from ghost_deploy.model.ghostnet import GhostNet

    return GhostNet(num_classes=info.num_classes, width=info.width, version=info.family, fused=fused)


def save_checkpoint(path: Path, module: torch.nn.Module, info: ModelInfo, extra: dict[str, Any] | None = None) -> None:
    """Save a state_dict with our metadata, atomically; loads with `torch.load(weights_only=True)`."""
    torch = optional.torch("Saving a checkpoint")
    meta = info.to_dict()
    clash = sorted(set(extra or {}) & set(meta))
    if clash:
        raise InputError(f"extra metadata may not replace {clash}; put them in the ModelInfo")
    payload: dict[str, Any] = {"state_dict": module.state_dict(), METADATA_KEY: {**meta, **(extra or {})}}
    with atomic_file(path) as fh:
        torch.save(payload, fh)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"model file {path} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"model path {path} is a directory; give a .pt/.pth checkpoint or an .onnx file")
    with open_regular(path, "model file"):  # a FIFO or device: refused instead of blocking; unreadable: exit 2
        pass


# A checkpoint's archive may declare at most this much once unpacked, and at most MAX_EXPANSION times its own
# size: torch.save stores tensors uncompressed, so a larger promise is a zip bomb. Checked before torch reads it.
MAX_CHECKPOINT_BYTES = 4 << 30
MAX_EXPANSION = 20


def _looks_like_torch_file(path: Path) -> bool:
    with open_regular(path, "model file") as fh:
        head = fh.read(4)
    # torch.save writes a zip; legacy files and plain pickles start with the PROTO opcode 0x80, protocol 2-5
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in name or name.endswith("constants.pkl") for name in zf.namelist())


def check_archive_sizes(path: Path) -> None:
    """Refuse a zip checkpoint whose declared unpacked size is beyond the bounds (a zip bomb), before loading it."""
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt: {_first_line(exc)})") from None
    size = path.stat().st_size
    if declared > MAX_CHECKPOINT_BYTES or declared > MAX_EXPANSION * size + (64 << 20):
        raise CheckpointError(
            f"{path} declares {declared / 1e9:.1f} GB once unpacked from {size / 1e6:.1f} MB (limit "
            f"{MAX_CHECKPOINT_BYTES / 1e9:.1f} GB, and {MAX_EXPANSION}x the file): a zip bomb or a corrupt file, "
            "refused before loading; torch.save writes tensors uncompressed"
        )


def _torch_load(torch: Any, path: Path, trust: bool) -> Any:
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (no zip or pickle header); give a .pt/.pth file")
    if zipfile.is_zipfile(path):
        check_archive_sizes(path)
    torchscript = _is_torchscript(path)
    try:
        if torchscript and trust:
            return torch.jit.load(str(path), map_location="cpu")
        if torchscript:
            raise CheckpointError(f"{path} is a TorchScript archive; loading it runs its code: {_TRUST_HINT}")
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(f"{path} is not a valid PyTorch checkpoint ({_first_line(exc)})") from None
        if not trust:
            raise CheckpointError(
                f"{path} contains pickled Python objects other than tensors, which weights_only loading refuses; "
                + _TRUST_HINT
            ) from None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:  # any failure of an arbitrary pickle is the file's fault
            raise CheckpointError(f"{path} could not be unpickled even when trusted: {_first_line(exc2)}") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {_first_line(exc)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _is_tensor_dict(torch: Any, obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _find_state_dict(torch: Any, obj: Mapping[str, Any], path: Path) -> tuple[Any, str]:
    if _is_tensor_dict(torch, obj):
        return obj, "state_dict"
    for key in NESTED_KEYS:
        value = obj.get(key)
        if _is_tensor_dict(torch, value) or isinstance(value, torch.nn.Module):
            return value, f"state_dict under '{key}'"
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors and all(isinstance(v, torch.Tensor) or k == METADATA_KEY for k, v in obj.items()):
        return tensors, "state_dict"
    raise CheckpointError(
        f"{path} holds no state_dict: expected tensors at the top level or under one of "
        f"{', '.join(repr(k) for k in NESTED_KEYS)}; found keys {sorted(map(str, obj))[:8]}"
    )


def _clean_keys(state: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    note = ""
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):
        state = {k[len("module.") :]: v for k, v in state.items()}
        note = ", 'module.' prefix removed"
    # thop's profiling counters (total_ops, total_params) are not weights
    state = {k: v for k, v in state.items() if "total_" not in k.rsplit(".", 1)[-1]}
    # the official GhostNetV3 release names its branch BatchNorms `bn`, timm (and we) `bn1`
    if any("_rpr_" in k and ".bn." in k for k in state):
        state = {(k.replace(".bn.", ".bn1.") if "_rpr_" in k else k): v for k, v in state.items()}
        note += ", official V3 branch names (bn -> bn1)"
    return state, note


def infer_layout(state: Mapping[str, Any]) -> tuple[str, bool]:
    """(family, fused) from the keys: V3 branches ('_rpr_') or fused V3 convs with bias, V2 attention, else V1."""
    if any("_rpr_" in k for k in state):
        return "v3", False
    if any(k.endswith(".primary_conv.0.bias") for k in state):
        return "v3", True
    if any(".short_conv." in k for k in state):
        return "v2", False
    return "v1", False


def infer_width(state: Mapping[str, Any]) -> float:
    """Width multiplier from the stem and last-conv channel counts (registered widths preferred)."""
    from ghost_deploy.model.ghostnet import last_channels, stem_channels

    try:
        stem = int(state["conv_stem.weight"].shape[0])
        last = int(state["blocks.9.0.conv.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(
            f"not a GhostNet state_dict: no {exc.args[0]!r} key; for another architecture pass a trusted "
            "pickled module or TorchScript with --trust-checkpoint"
        ) from None
    candidates = [v.width for v in VARIANTS.values()] + [round(0.05 * i, 2) for i in range(2, 81)]
    for width in candidates:
        if stem_channels(width) == stem and last_channels(width) == last:
            return width
    raise CheckpointError(
        f"no GhostNet width gives a {stem}-channel stem and a {last}-channel last conv; is this a GhostNet?"
    )


def _resolve_info(
    state: Mapping[str, Any], meta: Mapping[str, Any] | None, ov: Overrides, path: Path, family: str, hints: Hints
) -> tuple[ModelInfo, dict[str, str]]:
    """The model's info (metadata, else flags and defaults) and the defaults it took."""
    assumed: dict[str, str] = {}
    if meta is not None:
        info = ModelInfo.from_dict(dict(meta), origin=path)
        _check_metadata(info, state, path)
    else:
        if ov.arch is not None:
            from ghost_deploy.model.variants import get_variant

            variant = get_variant(ov.arch)
            source = "flags"
        else:
            variant = variant_for_width(infer_width(state), family)
            source = "inferred"
        classifier = state.get("classifier.weight")
        if classifier is None:
            raise CheckpointError(f"not a GhostNet state_dict: {path} has no 'classifier.weight'")
        num_classes = int(classifier.shape[0])
        info = ModelInfo(
            variant.name, variant.width, num_classes, variant.input_size, variant.preprocessing, source=source
        )
        assumed = assumed_defaults(apply_overrides(info, ov), ov, f"{variant.name}'s ImageNet default", hints)
    info = apply_overrides(info, ov)
    if info.family != family:
        where = "--arch" if info.source == "flags" else "its metadata"
        raise CheckpointError(
            f"{path} has the keys of a {_FAMILY_NAMES[family]}, but {where} says {info.arch}; "
            f"pass the right --arch (a {FAMILY_PREFIX[family]}* name)"
        )
    return info, assumed


def _check_metadata(info: ModelInfo, state: Mapping[str, Any], path: Path) -> None:
    """Our metadata must agree with itself and with the weights: the crop is the input size, and the
    classifier has one row per class (exit 2, naming both, instead of a shape mismatch later)."""
    if info.preprocessing.crop != info.input_size:
        raise CheckpointError(
            f"{path}: its metadata contradicts itself: input size {info.input_size} but preprocessing crop "
            f"{info.preprocessing.crop} (the crop is the input); fix the metadata"
        )
    classifier = state.get("classifier.weight")
    rows = int(classifier.shape[0]) if classifier is not None and len(classifier.shape) == 2 else None
    if rows is not None and rows != info.num_classes:
        raise CheckpointError(
            f"{path}: its metadata says {info.num_classes} classes, but its classifier has {rows} rows; "
            "fix the metadata (or the weights)"
        )


def check_tensor_kinds(torch: Any, state: Mapping[str, Any], path: Path) -> None:
    """CheckpointError (one line, naming the key) for a tensor no GhostNet parameter can be loaded from: sparse,
    quantized or meta (no data), or not floating point where a weight is (complex, integer); BatchNorm's
    `num_batches_tracked` counters are integers. Checked before the model is built."""
    for key, tensor in state.items():
        kind = None
        if tensor.layout != torch.strided:
            kind = f"a sparse tensor ({tensor.layout})"
        elif tensor.is_quantized:
            kind = f"a quantized tensor ({tensor.dtype})"
        elif tensor.is_meta:
            kind = "a meta tensor (a shape without data)"
        elif not key.endswith("num_batches_tracked") and not tensor.is_floating_point():
            kind = f"a {tensor.dtype} tensor, not floating point"
        if kind is not None:
            raise CheckpointError(
                f"{path}: '{key}' holds {kind}; save the dense float weights (model.state_dict() of the float model)"
            )


def check_shapes(info: ModelInfo, state: Mapping[str, Any], path: Path) -> None:
    """The state_dict's stem, last conv and classifier must have the shapes `info` implies (width, classes),
    checked on the tensors' shapes before a model of that width and class count is allocated (exit 2, naming
    both); every other key is compared by `_load_strict` once the model exists."""
    from ghost_deploy.model.ghostnet import HEAD_CHANNELS, last_channels, stem_channels

    if not info.width > 0:
        raise CheckpointError(f"{path}: width {info.width} is not a GhostNet's; fix the metadata or pass --arch")
    where = {**STATED_BY, "flags": "the flags", "inferred": "--num-classes"}.get(info.source, info.source)
    expected = {
        "conv_stem.weight": (stem_channels(info.width), f"{info.arch} (width {info.width:g})"),
        "blocks.9.0.conv.weight": (last_channels(info.width), f"{info.arch} (width {info.width:g})"),
        "classifier.weight": (info.num_classes, f"{info.num_classes} classes"),
    }
    for key, (rows, said) in expected.items():
        tensor = state.get(key)
        if tensor is None:
            raise CheckpointError(
                f"not a GhostNet state_dict: {path} has no {key!r} key; for another architecture pass a trusted "
                "pickled module or TorchScript with --trust-checkpoint"
            )
        shape = tuple(tensor.shape)
        if not shape or shape[0] != rows:
            raise CheckpointError(
                f"{path}: {where} says {said}, which needs {rows} rows in {key!r}, but the file's has shape "
                f"{shape}; fix the metadata, or pass the right --arch/--num-classes"
            )
    classifier = tuple(state["classifier.weight"].shape)
    if classifier != (info.num_classes, HEAD_CHANNELS):
        raise CheckpointError(
            f"{path}: 'classifier.weight' has shape {classifier}, a GhostNet's is ({info.num_classes}, {HEAD_CHANNELS})"
        )


def _load_strict(torch: Any, module: Any, state: Mapping[str, Any], info: ModelInfo, path: Path) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    differ = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or differ:
        parts = []
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shapes that differ (file vs model)", differ),
        ):
            if items:
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(
            f"{path} does not match {info.arch} (width {info.width}, {info.num_classes} classes): "
            + "; ".join(parts)
            + "; check --arch/--num-classes, or that this is a GhostNet checkpoint"
        )
    module.load_state_dict(state, strict=True)


def _trusted_module(torch: Any, module: Any, ov: Overrides, form: str, hints: Hints, path: Path) -> LoadedModel:
    module.eval()
    size = ov.input_size or ov.crop or 224
    check_input_size(size)
    base = Preprocessing(round(size * 256 / 224), size)
    info = ModelInfo("custom", 0.0, 0, size, base, source="trusted")
    with torch.no_grad():
        try:
            out = module(torch.zeros(1, 3, size, size))
        except Exception as exc:
            raise CheckpointError(f"the {form} does not run on a 1x3x{size}x{size} input: {_first_line(exc)}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise CheckpointError(f"the {form} must return one (batch, classes) tensor, got {type(out).__name__}")
    info = apply_overrides(info.replace(num_classes=int(out.shape[1])), dataclasses.replace(ov, arch=None))
    check_hints(hints, info, ov, path)
    return LoadedModel(module, info, form, assumed_defaults(info, ov, f"the default for a {form}", hints))

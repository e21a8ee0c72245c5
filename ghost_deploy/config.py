"""The typed configurations of the jobs: what the user asked for, validated where it is built.

Plain dataclasses with no heavy import: the CLI builds them from its arguments, Python callers build them
directly, and every stage reads them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ghost_deploy.errors import InputError

DEFAULT_OPSET = 17
HIGH_PRECISIONS = ("fp32", "fp16")

# Upper bounds checked before anything is allocated: what a user asks for, never what an input claims, sizes
# the memory of a run. One batch of inputs is at most MAX_BATCH_PIXELS x 3 float32 (154 MB; 256 at 224 x 224).
MAX_BATCH = 1024
MAX_INPUT_SIZE = 2048
MAX_CLASSES = 1_000_000  # --num-classes, and a model's metadata (num_classes, labels)
MAX_BATCH_PIXELS = 256 * 224 * 224
MAX_SAMPLES = 100_000  # --calib-size, --eval-limit
MAX_LATENCY_BATCH = 64  # --latency-batch: every ort-int8 candidate runs a few times at it during the export


def check_batch_memory(batch: BatchSpec, input_size: int) -> None:
    """Refuse a batch whose input alone would exceed MAX_BATCH_PIXELS (batch x size x size), before any work."""
    largest = batch.dynamic[2] if batch.dynamic is not None else (batch.fixed or 1)
    if largest * input_size * input_size > MAX_BATCH_PIXELS:
        fits = max(1, MAX_BATCH_PIXELS // (input_size * input_size))
        raise InputError(
            f"a batch of {largest} at {input_size} x {input_size} is {largest * input_size**2 * 12 / 1e9:.1f} GB of "
            f"input alone; at this input size use a batch of at most {fits} (--batch / --dynamic-batch MAX)"
        )


def check_count(value: int | None, name: str, high: int = MAX_SAMPLES) -> None:
    """Refuse a count flag outside 1..high (None: not given)."""
    if value is not None and not 1 <= value <= high:
        raise InputError(f"{name} must be between 1 and {high}, got {value}")


def check_number(value: float | None, name: str, low: float, high: float, low_open: bool = False) -> None:
    """Refuse a non-finite number, or one outside [low, high] ((low, high] with `low_open`); None: not given."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value <= high
    ok = ok and (value > low if low_open else value >= low)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if math.isfinite(high) else "")
        raise InputError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """A fixed batch, or a dynamic batch with the MIN:OPT:MAX range a TensorRT profile will use."""

    fixed: int | None = 1
    dynamic: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        check_count(self.fixed, "--batch", MAX_BATCH)
        if self.dynamic is not None and not 1 <= self.dynamic[0] <= self.dynamic[1] <= self.dynamic[2] <= MAX_BATCH:
            raise InputError(f"--dynamic-batch {self.dynamic}: need 1 <= MIN <= OPT <= MAX <= {MAX_BATCH}")

    @property
    def is_dynamic(self) -> bool:
        """True for a dynamic batch dimension."""
        return self.dynamic is not None

    @property
    def example(self) -> int:
        """The batch size used for tracing and for verification batches."""
        return self.dynamic[1] if self.dynamic is not None else (self.fixed or 1)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        if self.dynamic is not None:
            return {"dynamic": True, "min": self.dynamic[0], "opt": self.dynamic[1], "max": self.dynamic[2]}
        return {"dynamic": False, "size": self.fixed}


def parse_dynamic_batch(text: str) -> tuple[int, int, int]:
    """Parse MIN:OPT:MAX, requiring 1 <= MIN <= OPT <= MAX."""
    try:
        lo, opt, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"--dynamic-batch expects MIN:OPT:MAX such as 1:8:32, got {text!r}") from None
    if not 1 <= lo <= opt <= hi <= MAX_BATCH:
        raise InputError(f"--dynamic-batch {text}: need 1 <= MIN <= OPT <= MAX <= {MAX_BATCH}")
    return lo, opt, hi


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """Limits a verification must meet; None disables a limit."""

    max_abs: float | None = 1e-4
    # the absolute limit grows by rtol x the largest reference logit (float32 rounding: PyTorch's batched kernels
    # alone round to 1.4e-5 of it on out-of-distribution inputs whose logits reach thousands)
    rtol: float = 3e-5
    min_cosine: float | None = 0.9999
    cosine_of: str = "min"  # judge the per-sample cosine by its "min" or its "mean"
    min_agreement: float | None = 0.99
    max_accuracy_drop: float | None = None

    def __post_init__(self) -> None:
        check_number(self.max_abs, "--atol", 0.0, math.inf, low_open=True)
        check_number(self.rtol, "--rtol", 0.0, 1.0)
        check_number(self.min_cosine, "--min-cosine", 0.0, 1.0, low_open=True)
        check_number(self.min_agreement, "--min-agreement", 0.0, 1.0)
        check_number(self.max_accuracy_drop, "--max-accuracy-drop (as a fraction)", 0.0, 1.0)
        if self.cosine_of not in ("min", "mean"):
            raise InputError(f"cosine_of must be 'min' or 'mean', got {self.cosine_of!r}")

    @classmethod
    def for_precision(cls, precision: str) -> Tolerances:
        """Defaults by precision: FP32 tight; FP16 and INT8 judged by cosine, agreement and accuracy drop.

        Why these numbers (README, "Precision gates"): FP32 ONNX against PyTorch differs only by float32
        rounding; FP16 rounds every activation to 11 bits, which moves no logit far (min cosine 0.999); INT8
        adds quantisation noise to every layer, which moves single samples more (mean cosine 0.99, 95%
        agreement); the accuracy drop on labelled inputs is what a user finally cares about (1 point).
        """
        if precision == "fp16":
            return cls(max_abs=None, rtol=0.0, min_cosine=0.999, min_agreement=0.98, max_accuracy_drop=0.01)
        if precision == "int8":
            # INT8 noise moves single samples more than FP16 does: the mean cosine is the stable statistic
            return cls(
                max_abs=None, rtol=0.0, min_cosine=0.99, cosine_of="mean", min_agreement=0.95, max_accuracy_drop=0.01
            )
        return cls()

    def to_dict(self) -> dict[str, float | str | None]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


# The flags that set each precision's gate, by Tolerances field: failure messages name the one to change.
# FP32 (the FP32 ONNX against PyTorch, and `verify`) keeps the historical names; FP16 and INT8 have their own.
GATE_FLAGS: dict[str, dict[str, str]] = {
    "fp32": {"max_abs": "--atol", "rtol": "--rtol", "min_cosine": "--min-cosine", "min_agreement": "--min-agreement"},
    "fp16": {
        "min_cosine": "--fp16-min-cosine",
        "min_agreement": "--fp16-min-agreement",
        "max_accuracy_drop": "--max-accuracy-drop",
    },
    "int8": {
        "min_cosine": "--int8-min-cosine",
        "min_agreement": "--int8-min-agreement",
        "max_accuracy_drop": "--max-accuracy-drop",
    },
}


@dataclasses.dataclass(frozen=True)
class Overrides:
    """Architecture and preprocessing given on the command line; None means 'not given'."""

    arch: str | None = None
    num_classes: int | None = None
    input_size: int | None = None
    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str | None = None
    labels: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class PrecisionConfig:
    """How to calibrate and quantize.

    `high_precision` is the dtype of what stays unquantized in a Q/DQ graph; None means "not given": FP32 for
    `onnx-int8`, and for `trt-int8` whatever the TensorRT version's build needs (the plan decides).
    """

    calib_method: str = "minmax"
    percentile: float = 99.99
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    high_precision: str | None = None
    trt_version: str | None = None
    calib_cache: Path | None = None
    auto_exclude: bool = False
    auto_exclude_agreement: float = 0.99  # on the calibration data: 1 - the largest accuracy drop allowed
    latency_batch: int | None = None  # ort-int8: the batch its FP32/INT8 boundary is timed at (None: the ONNX's)

    def __post_init__(self) -> None:
        check_number(self.percentile, "--percentile", 0.0, 100.0, low_open=True)
        check_count(self.latency_batch, "--latency-batch", MAX_LATENCY_BATCH)
        check_number(self.auto_exclude_agreement, "1 - --max-accuracy-drop", 0.0, 1.0)
        if self.high_precision not in (None, *HIGH_PRECISIONS):
            raise InputError(f"--high-precision must be fp32 or fp16, got {self.high_precision!r}")


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """Builder options of the trt-* targets."""

    int8_mode: str = "explicit"
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    optimization_level: int | None = None
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    dla_core: int | None = None
    tf32: bool = False  # --tf32: let FP32 layers use TF32 (the gate widens by precision.tf32.widen_for_tf32)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Everything `ghost-export` was asked to do."""

    target: str = "onnx"
    output: Path | None = None
    overrides: Overrides = dataclasses.field(default_factory=Overrides)
    batch: BatchSpec | None = None  # None: fixed batch 1, or the ONNX input's own batch
    opset: int = DEFAULT_OPSET
    eval_dir: Path | None = None
    eval_limit: int | None = 500
    tolerances: Tolerances = dataclasses.field(default_factory=Tolerances)
    trust: bool = False
    seed: int = 0
    calib: Path | None = None
    calib_size: int | None = None
    precision: PrecisionConfig = dataclasses.field(default_factory=PrecisionConfig)
    precision_tolerances: Tolerances | None = None  # None: the defaults of the target's precision
    engine: EngineOptions = dataclasses.field(default_factory=EngineOptions)
    command: tuple[str, ...] = ()
    allow_nonfinite_weights: bool = False  # --allow-nonfinite-weights: load NaN/Inf weights instead of refusing

    def __post_init__(self) -> None:
        check_count(self.calib_size, "--calib-size")
        check_count(self.eval_limit, "--eval-limit")
        if self.batch is not None and self.overrides.input_size is not None:
            check_batch_memory(self.batch, self.overrides.input_size)

    def replace(self, **changes: object) -> ExportConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

"""Open a deployment bundle safely and run it: what an embedded application imports.

Needs the core dependencies only (numpy, pillow, onnx, onnxruntime, jsonschema), or tensorrt + pycuda for an
engine; never torch. `Bundle.open` validates the manifest (strict JSON, JSON Schema), refuses a missing,
extra, linked, resized or changed file, extracts a `.tar.gz` with a bounded reader that never writes outside
its destination, cross-checks every ONNX artifact with the manifest (format, input/output names and shapes,
classes; no external data) before any session exists, and checks an engine's TensorRT version and compute
capability before anything deserializes it. Non-finite outputs are never returned as results.

What runs is what was checked: the labels and every ONNX artifact are read once at open, their size and sha256
checked, and ONNX Runtime loads the model from those bytes (a directory bundle's file replaced after `open` is
never run). Images take one path whatever their form (a file, a PIL image: `preprocess.to_rgb`). A closed
bundle raises BundleClosedError; `close` waits for the inferences under way, so none of them sees its files go.

What runs is chosen by `select.choose` (the user's artifact, the bundle's default, or the rule); an engine is
the packed one when it fits this TensorRT and GPU, else one built here from the bundled ONNX (`device`), and
either way verified on the bundle's reference set the first time it is used on this device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ghost_deploy.backends.base import Runner
from ghost_deploy.bundle import archive
from ghost_deploy.bundle.checks import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_MEMBERS,
    SCHEMA_VERSION,
    check_files_present,
    check_model,
    gate_warnings,
    manifest_schema,
    parse_manifest,
    read_verified,
    validate_manifest,
    verify_directory,
)
from ghost_deploy.bundle.errors import (
    BundleClosedError,
    BundleError,
    EngineMismatchError,
    EngineNotPreparedError,
    EngineRejected,
    ExternalDataError,
    ManifestError,
    MissingFileError,
    NotABundleError,
    SchemaVersionError,
    TamperedFileError,
    TruncatedArchiveError,
    UnexpectedFileError,
    UnsafeMemberError,
)
from ghost_deploy.bundle.select import Choice
from ghost_deploy.data.preprocess import Preprocessing, load_rgb, preprocess_image, to_rgb
from ghost_deploy.errors import GhostDeployError, InputError, NonFiniteOutputError

if TYPE_CHECKING:
    from ghost_deploy.bundle.device import DeviceEngine

MAX_BUNDLE_BYTES = 2 << 30  # a GhostNet bundle is tens of MB; raise `max_bytes` for a larger one
DEFAULT_TOP_K = 5  # predict's labels per image when not told (all of them for a model of fewer classes)

__all__ = [
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "MAX_MEMBERS",
    "SCHEMA_VERSION",
    "Bundle",
    "BundleClosedError",
    "BundleError",
    "EngineMismatchError",
    "EngineNotPreparedError",
    "EngineRejected",
    "ExternalDataError",
    "FailedGateWarning",
    "ManifestError",
    "MissingFileError",
    "NotABundleError",
    "Prediction",
    "SchemaVersionError",
    "TamperedFileError",
    "TruncatedArchiveError",
    "UnexpectedFileError",
    "UnsafeMemberError",
    "extract_archive",
    "manifest_schema",
    "validate_manifest",
    "verify_directory",
]

DOCUMENTED_ERRORS: tuple[type[GhostDeployError], ...] = (BundleError, NonFiniteOutputError, EngineRejected)


class FailedGateWarning(UserWarning):
    """A bundle holds an artifact that failed its verification gates (packed with --allow-failed)."""


def extract_archive(archive_path: Path, dest: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> dict[str, Any]:
    """Check and extract a bundle .tar.gz into the empty directory `dest`; return the validated manifest.

    Two bounded passes: the first reads everything (structure, names, sizes, sha256, the gzip CRC) and writes
    nothing; the manifest then bounds what the second writes, each file hashed as it is written.
    """
    members = archive.scan(archive_path, max_bytes, MANIFEST, MAX_MANIFEST_BYTES)
    if MANIFEST not in members:
        raise NotABundleError(f"{archive_path} has no {MANIFEST}; it is not a bundle")
    manifest = parse_manifest(members[MANIFEST].data or b"")
    check_files_present(manifest, list(members))
    total = sum(f["bytes"] for f in manifest["files"])
    if total > max_bytes:
        raise UnsafeMemberError(f"the bundle declares {total} bytes, more than the limit {max_bytes}")
    for entry in manifest["files"]:
        found = members[entry["path"]]
        from ghost_deploy.bundle.checks import check_entry

        check_entry(entry, found.size, found.sha256)
    free = shutil.disk_usage(dest).free
    if total > free:
        raise InputError(f"extracting {archive_path} needs {total} bytes; {dest} has {free} free; free some space")
    archive.write_member(dest, MANIFEST, members[MANIFEST].data or b"")
    archive.extract(archive_path, dest, {f["path"]: (f["bytes"], f["sha256"]) for f in manifest["files"]})
    return manifest


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One class: its index, label and softmax score."""

    index: int
    label: str
    score: float


class Bundle:
    """An opened, verified bundle. Use `with Bundle.open(path) as bundle:`; closing removes what it extracted.

    A temporary extraction is also removed when the Bundle is garbage-collected or the interpreter exits.
    `warnings` lists what the application should know (an artifact packed with --allow-failed); each is also
    issued as a FailedGateWarning.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], cleanup: Path | None = None, warn: bool = True) -> None:
        self.root = root
        self.manifest = manifest
        self._cleanup = cleanup
        self._finalizer = weakref.finalize(self, shutil.rmtree, cleanup, True) if cleanup is not None else None
        self._runner: Runner | None = None
        self._lock = threading.Lock()
        self._state = threading.Condition()  # guards _closed and _busy (calls under way), for close()
        self._closed = False
        self._busy = 0
        self.choice: Choice | None = None
        self.engine: DeviceEngine | None = None
        try:
            self.preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
        except InputError as exc:
            raise ManifestError(f"{MANIFEST} has impossible preprocessing: {exc}") from None
        try:
            labels = read_verified(root, manifest, manifest["labels_file"]).decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise ManifestError(f"{manifest['labels_file']} is not UTF-8 text") from None
        if len(labels) != manifest["num_labels"]:
            raise ManifestError(
                f"{manifest['labels_file']} has {len(labels)} lines, the manifest says {manifest['num_labels']} labels"
            )
        self.labels = labels
        self._models = check_model(root, manifest)  # the ONNX artifacts' verified bytes: what ONNX Runtime loads
        self.warnings = gate_warnings(manifest)
        for text in self.warnings if warn else []:
            warnings.warn(text, FailedGateWarning, stacklevel=3)

    @classmethod
    def open(
        cls,
        path: Path | str,
        extract_to: Path | str | None = None,
        max_bytes: int = MAX_BUNDLE_BYTES,
        warn: bool = True,
        artifact: str | None = None,
        engine: str = "auto",
        cache_dir: Path | str | None = None,
        say: Callable[[str], None] | None = None,
        settle: bool = True,
    ) -> Bundle:
        """Open a bundle directory or .tar.gz, verifying it completely before returning.

        An archive is extracted into `extract_to` (created; must not exist or be empty) or a temporary
        directory that `close()` removes. A refused or interrupted extraction leaves nothing: what this call
        created (the files, `extract_to` and its parents when they were new) is removed. `warn=False`: the
        caller reads `bundle.warnings` itself instead of receiving FailedGateWarning.

        `artifact` (a file name or a target of the bundle) chooses what runs; else `select.DEFAULT_RULE`. An
        engine is settled before this returns (`bundle.engine`): the packed one when it fits this TensorRT
        and GPU, else one built here from the bundle's ONNX and cached in `cache_dir` (default: the per-user
        engine cache); verified on the bundle's reference set the first time it is used on this device.
        `engine="rebuild"` builds even when the packed or cached engine would do; `engine="never"` refuses to
        build (EngineNotPreparedError: run `ghost-deploy prepare` first). `say` receives progress lines.
        `settle=False` defers the choice and the engine to the first inference (`inspect` looks without building).
        """
        path = Path(path)
        if path.is_dir():
            bundle = cls(path, verify_directory(path), warn=warn)
            if settle:
                bundle.select(artifact, engine, cache_dir, say)
            return bundle
        if not path.is_file():
            raise NotABundleError(f"{path} does not exist or is not a file; give a bundle directory or .tar.gz")
        created: list[Path] = []
        if extract_to is not None:
            extract_to = Path(extract_to)
            created = _make_dirs(extract_to)
            if any(extract_to.iterdir()):
                raise InputError(f"{extract_to} is not empty; give an empty or new directory to extract into")
            dest, cleanup = extract_to, None
        else:
            dest = Path(tempfile.mkdtemp(prefix="ghost-bundle-"))
            cleanup = dest
        try:
            bundle = cls(dest, extract_archive(path, dest, max_bytes), cleanup, warn)
        except BaseException:
            for item in dest.iterdir():  # only what this call extracted: dest was new or empty
                item.unlink()
            for folder in (cleanup, *created):
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            if settle:
                bundle.select(artifact, engine, cache_dir, say)
        except BaseException:
            bundle.close()
            raise
        return bundle

    def select(
        self,
        artifact: str | None = None,
        engine: str = "auto",
        cache_dir: Path | str | None = None,
        say: Callable[[str], None] | None = None,
    ) -> Choice:
        """Choose what runs (see `open`) and settle its engine; done once, by `open` or at the first inference."""
        from ghost_deploy.bundle.select import choose, simulated_files, unfit_here

        with self._using(), self._lock:
            if self.choice is not None:
                return self.choice
            from ghost_deploy.backends.trt.engine_cache import EngineCache

            cache = EngineCache(Path(cache_dir) if cache_dir is not None else None)
            simulated = simulated_files(self.root, self.manifest)
            unfit = unfit_here(self.root, self.manifest, engine, cache)
            choice = choose(self.manifest, artifact, _tensorrt_available(), simulated, unfit)
            if choice.backend == "tensorrt":
                from ghost_deploy.bundle.device import resolve

                self.engine = resolve(self.root, self.manifest, choice.artifact, engine, cache, say or _quiet)
            self.choice = choice
            return choice

    def close(self) -> None:
        """Release the runner and remove a temporary extraction; later calls raise BundleClosedError.

        Thread-safe: it waits for the calls under way (an inference started before `close` finishes with its
        result); calling it again does nothing.
        """
        with self._state:
            self._closed = True
            while self._busy:
                self._state.wait()
        with self._lock:
            if self._runner is not None:
                self._runner.deactivate()
                self._runner = None
            self._models = {}
        if self._finalizer is not None:
            self._finalizer()
            self._cleanup = None

    @contextlib.contextmanager
    def _using(self) -> Iterator[None]:
        """A call that needs the bundle open: BundleClosedError once closed; `close` waits for it to end."""
        with self._state:
            if self._closed:
                raise BundleClosedError(
                    f"the bundle {self.root} is closed (close() or the end of its with block); open it again with "
                    "Bundle.open to run it"
                )
            self._busy += 1
        try:
            yield
        finally:
            with self._state:
                self._busy -= 1
                self._state.notify_all()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def artifact(self) -> dict[str, Any]:
        """The manifest entry of the artifact the bundle runs (see `open` for how it is chosen)."""
        return self.select().artifact

    def runner(self) -> Runner:
        """The runner of the chosen artifact (for an engine: the one `select` settled), created once."""
        choice = self.select()
        with self._using(), self._lock:
            if self._runner is None:
                runner: Runner
                if self.engine is not None:
                    from ghost_deploy.backends.trt.runner import TensorRTRunner

                    found = self.engine
                    runner = TensorRTRunner(found.path, found.version_compatible, found.dla_core, plan=found.plan)
                else:
                    from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner

                    runner = OnnxRuntimeRunner(self._models[choice.artifact["file"]])  # the bytes checked at open
                runner.activate()
                self._runner = runner
            return self._runner

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for a preprocessed NCHW batch of any size.

        A model with a fixed batch N runs N rows at a time, the last group padded with copies of its last row
        (the padding's outputs are dropped); a dynamic batch runs at most its profile's MAX rows at a time.
        NonFiniteOutputError when the model's output holds NaN or Inf: they are not results. InputError for a
        batch that is not numbers (strings, objects), of another shape, or not finite.
        """
        with self._using():
            return self._infer(batch)

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        inp = self.manifest["input"]
        shape = list(inp["shape"])
        batch = _numbers(batch, "the input batch").astype(np.float32)
        if batch.ndim != len(shape) or list(batch.shape[1:]) != shape[1:] or batch.shape[0] < 1:
            raise InputError(f"expected a batch of shape {['N', *shape[1:]]} with N >= 1, got {list(batch.shape)}")
        if not np.isfinite(batch).all():
            raise InputError("the input batch holds NaN or Inf values; give finite (preprocessed) inputs")
        runner = self.runner()
        fixed = shape[0] if shape[0] > 0 else None
        step = fixed or (inp.get("dynamic_batch") or {}).get("max") or batch.shape[0]
        parts = []
        for start in range(0, batch.shape[0], step):
            rows = batch[start : start + step]
            count = len(rows)
            if fixed is not None and count < fixed:
                rows = np.concatenate([rows, np.repeat(rows[-1:], fixed - count, axis=0)])
            out = runner.infer({inp["name"]: rows})
            parts.append({name: value[:count] for name, value in out.items()})
        outputs = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        _check_finite(outputs[self.manifest["output"]["name"]], self.artifact["file"])
        return outputs

    def preprocess(self, image: Image.Image | np.ndarray | Path | str) -> np.ndarray:
        """A CHW float32 array from an image file, a PIL image, an HxWx3 uint8 array, or a preprocessed CHW array."""
        if isinstance(image, (str, Path)):
            return preprocess_image(load_rgb(Path(image)), self.preprocessing)
        if isinstance(image, Image.Image):  # the same conversion as a file's: EXIF orientation, 16-bit and float modes
            return preprocess_image(to_rgb(image), self.preprocessing)
        arr = _numbers(image, "predict's image")
        if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
            return preprocess_image(Image.fromarray(arr, mode="RGB"), self.preprocessing)
        if arr.ndim == 3 and list(arr.shape) == self.manifest["input"]["shape"][1:]:
            return arr.astype(np.float32, copy=False)
        raise InputError(
            f"predict takes an image path, a PIL image, an HxWx3 uint8 array or a preprocessed array of shape "
            f"{self.manifest['input']['shape'][1:]}; got an array of shape {list(arr.shape)} ({arr.dtype})"
        )

    def predict(self, image: Image.Image | np.ndarray | Path | str, top_k: int | None = None) -> list[Prediction]:
        """The top-k labels with softmax scores for one image, best first.

        `top_k`: a whole number from 1 to the model's classes (InputError otherwise); None: DEFAULT_TOP_K, or
        every class of a model with fewer. NonFiniteOutputError (exit 4 from the CLI) when the model gives NaN or
        Inf: never scores from them. BundleClosedError after `close()`.
        """
        count = self._top_k(top_k)
        logits = self.infer(self.preprocess(image)[None])[self.manifest["output"]["name"]][0].astype(np.float64)
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
        order = np.argsort(-scores, kind="stable")[:count]
        return [Prediction(int(i), self._label(int(i)), float(scores[i])) for i in order]

    def _top_k(self, top_k: object) -> int:
        """`top_k` checked: an integer (not a bool) from 1 to the number of classes; None: the default."""
        classes = int(self.manifest["output"]["shape"][-1])
        if top_k is None:
            return min(DEFAULT_TOP_K, classes)
        if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= classes:
            raise InputError(
                f"top_k (--top-k) must be a whole number from 1 to {classes} (the model's classes), got {top_k!r}"
            )
        return int(top_k)

    def _label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)


def _numbers(value: object, what: str) -> np.ndarray:
    """`value` as a numpy array of integers or floats; InputError for strings, objects, booleans, complex, ragged."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # a ragged or otherwise unconvertible sequence
        raise InputError(f"{what} is not an array of numbers ({str(exc)[:120]})") from None
    if arr.dtype.kind not in "iuf":
        raise InputError(
            f"{what} holds {arr.dtype} values ({arr.dtype.kind!r}), not numbers; give an image, or an array of "
            "integers or floats"
        )
    return arr


def _check_finite(logits: np.ndarray, artifact: str) -> None:
    """NonFiniteOutputError naming how many outputs, in which samples and classes, are NaN or Inf."""
    bad = ~np.isfinite(logits)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(bad), -1).any(1)).tolist()
        classes = np.flatnonzero(bad.reshape(len(bad), -1).any(0)).tolist()
        raise NonFiniteOutputError(
            f"{artifact} gave {int(bad.sum())} non-finite outputs (NaN or Inf) for samples {rows[:8]}, classes "
            f"{classes[:16]}: these are not scores; the model (or its weights) is broken, verify it again"
        )


def _make_dirs(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return the outermost one created (removing it removes the rest)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {folder}: {exc.strerror}; choose another extract_to") from None
    return missing[-1:]


def _tensorrt_available() -> bool:
    from ghost_deploy.machine.probe import tensorrt_installed

    return tensorrt_installed()  # a distribution (or the simulator), not the stubs' namespace package


def _quiet(text: str) -> None:
    """Progress nobody asked to see."""


def check_engine_origin(origin: dict[str, Any], trt_here: str, cc_here: str | None, jetson_here: bool = False) -> None:
    """Raise EngineMismatchError when the manifest's engine cannot run on TensorRT `trt_here` / GPU `cc_here`."""
    from ghost_deploy.backends.trt.compat import check_compatible
    from ghost_deploy.bundle.device import origin_of

    try:
        check_compatible(origin_of(origin), trt_here, cc_here, jetson_here)
    except InputError as exc:
        raise EngineMismatchError(str(exc)) from None

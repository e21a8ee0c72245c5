"""Open a deployment bundle safely and run it: what an embedded application imports.

Needs the core dependencies only (numpy, pillow, onnxruntime, jsonschema), or tensorrt + pycuda for an
engine; never torch. `Bundle.open` validates the manifest against its JSON Schema, refuses a missing, extra,
resized or changed file, extracts a `.tar.gz` without ever writing outside its destination, and checks an
engine's TensorRT version and compute capability before anything deserializes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import jsonschema
import numpy as np
from PIL import Image

from ghost_deploy.backends.base import Runner
from ghost_deploy.data.preprocess import Preprocessing, load_rgb, preprocess_image
from ghost_deploy.errors import GhostDeployError, InputError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
MAX_MEMBERS = 64
MAX_BUNDLE_BYTES = 8 << 30


class BundleError(InputError):
    """A bundle that cannot be opened: malformed, tampered with, unsafe or made for another machine (exit 2)."""


class NotABundleError(BundleError):
    """The path is neither a bundle directory nor a readable .tar.gz with a manifest."""


class TruncatedArchiveError(BundleError):
    """The .tar.gz ends early or is corrupt."""


class UnsafeMemberError(BundleError):
    """An archive member or directory entry that could write outside the destination or is not a plain file."""


class ManifestError(BundleError):
    """manifest.json is not JSON or fails the manifest's JSON Schema."""


class SchemaVersionError(ManifestError):
    """The manifest's schema version is not one this ghost-deploy reads."""


class MissingFileError(BundleError):
    """A file listed in the manifest is absent."""


class UnexpectedFileError(BundleError):
    """A file is present that the manifest does not list."""


class TamperedFileError(BundleError):
    """A file's size or sha256 differs from the manifest's."""


class EngineMismatchError(BundleError):
    """The engine was built for another TensorRT version or GPU than this machine's."""


DOCUMENTED_ERRORS: tuple[type[GhostDeployError], ...] = (BundleError,)


def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema, as shipped in the package."""
    text = resources.files("ghost_deploy.bundle").joinpath("manifest.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_manifest(manifest: object) -> dict[str, Any]:
    """Check the schema version, the JSON Schema and the cross-references; return the manifest."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{MANIFEST} must hold a JSON object, got {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ManifestError(f"{MANIFEST} has no integer schema_version (got {version!r}); this is not a bundle")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{MANIFEST} has schema version {version}; this ghost-deploy reads version {SCHEMA_VERSION}: "
            "use the ghost-deploy that packed it, or repack the bundle with this one"
        )
    validator = jsonschema.Draft202012Validator(manifest_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ManifestError(f"{MANIFEST} fails its schema at {where}: {error.message[:300]}")
    names = [f["path"] for f in manifest["files"]]
    if len(set(names)) != len(names):
        raise ManifestError(f"{MANIFEST} lists a file twice: {sorted(n for n in names if names.count(n) > 1)[0]}")
    referenced = [manifest["labels_file"]] + [a["file"] for a in manifest["artifacts"]]
    for name in referenced:
        if name not in names:
            raise ManifestError(f"{MANIFEST} refers to {name}, which its file list does not have")
    return manifest


def _parse_manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{MANIFEST} is not valid JSON: {str(exc)[:200]}") from None
    return validate_manifest(manifest)


def _hash_copy(src: Any, dst: Any | None, limit: int) -> tuple[int, str]:
    """Copy (or just read) a stream, returning its size and sha256; stops early past `limit` bytes."""
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(1 << 20):
        size += len(chunk)
        if size > limit:
            break
        digest.update(chunk)
        if dst is not None:
            dst.write(chunk)
    return size, digest.hexdigest()


def _check_entry(entry: dict[str, Any], size: int, digest: str) -> None:
    if size != entry["bytes"]:
        raise TamperedFileError(
            f"{entry['path']} has {size} bytes, the manifest says {entry['bytes']}: the file was changed or "
            "truncated; get the bundle again"
        )
    if digest != entry["sha256"]:
        raise TamperedFileError(
            f"{entry['path']} has sha256 {digest[:16]}..., the manifest says {entry['sha256'][:16]}...: "
            "the file was changed; get the bundle again"
        )


def _check_files_present(manifest: dict[str, Any], present: Sequence[str]) -> None:
    listed = {f["path"] for f in manifest["files"]}
    extra = sorted(set(present) - listed - {MANIFEST})
    if extra:
        raise UnexpectedFileError(f"the bundle holds {extra[0]}, which its manifest does not list; refusing it")
    missing = sorted(listed - set(present))
    if missing:
        raise MissingFileError(f"the bundle lacks {missing[0]}, which its manifest lists; get the bundle again")


def verify_directory(root: Path) -> dict[str, Any]:
    """Validate a bundle directory in place: manifest, no extra/missing/special files, sizes and sha256."""
    names = []
    for entry in os.scandir(root):
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            raise UnsafeMemberError(f"{entry.name} in {root} is a symbolic link; a bundle holds plain files only")
        if not stat.S_ISREG(mode):
            raise UnsafeMemberError(f"{entry.name} in {root} is not a plain file; a bundle holds plain files only")
        names.append(entry.name)
        if len(names) > MAX_MEMBERS:
            raise UnsafeMemberError(f"{root} holds more than {MAX_MEMBERS} files; this is not a bundle")
    if MANIFEST not in names:
        raise NotABundleError(f"{root} has no {MANIFEST}; it is not a bundle (make one with ghost-deploy pack)")
    if (root / MANIFEST).stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes; refusing it")
    manifest = _parse_manifest((root / MANIFEST).read_bytes())
    _check_files_present(manifest, names)
    for entry in manifest["files"]:
        with (root / entry["path"]).open("rb") as fh:
            size, digest = _hash_copy(fh, None, entry["bytes"])
        _check_entry(entry, size, digest)
    return manifest


def _member_name(member: tarfile.TarInfo) -> str:
    """The member's file name, refusing anything that is not a plain file at the top of the archive."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeMemberError(f"archive member {name!r} has an absolute path; refusing the archive")
    if ".." in path.parts or "\\" in name:
        raise UnsafeMemberError(f"archive member {name!r} climbs out of the destination with '..'; refusing it")
    if member.issym() or member.islnk():
        raise UnsafeMemberError(f"archive member {name!r} is a link (to {member.linkname!r}); refusing the archive")
    if member.ischr() or member.isblk() or member.isfifo():
        raise UnsafeMemberError(f"archive member {name!r} is a device or FIFO; refusing the archive")
    parts = [p for p in path.parts if p != "."]
    if not member.isreg() or len(parts) != 1:
        raise UnsafeMemberError(f"archive member {name!r} is not a plain file at the top of the archive; refusing it")
    return parts[0]


def _read_members(tf: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    while (member := tf.next()) is not None:
        name = _member_name(member)
        if name in members:
            raise UnsafeMemberError(f"archive member {name!r} appears twice; refusing the archive")
        if len(members) >= MAX_MEMBERS:
            raise UnsafeMemberError(f"the archive has more than {MAX_MEMBERS} members; this is not a bundle")
        members[name] = member
    return members


def extract_archive(archive: Path, dest: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> dict[str, Any]:
    """Check and extract a bundle .tar.gz into the empty directory `dest`; return the validated manifest."""
    try:
        with tarfile.open(archive, "r:gz") as tf:
            members = _read_members(tf)
            if MANIFEST not in members:
                raise NotABundleError(f"{archive} has no {MANIFEST}; it is not a bundle")
            if members[MANIFEST].size > MAX_MANIFEST_BYTES:
                raise ManifestError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes; refusing it")
            manifest = _parse_manifest(_read_member(tf, members[MANIFEST]))
            _check_files_present(manifest, list(members))
            total = sum(f["bytes"] for f in manifest["files"])
            if total > max_bytes:
                raise UnsafeMemberError(f"the bundle declares {total} bytes, more than the limit {max_bytes}")
            (dest / MANIFEST).write_bytes(_read_member(tf, members[MANIFEST]))
            for entry in manifest["files"]:
                member = members[entry["path"]]
                if member.size != entry["bytes"]:
                    _check_entry(entry, member.size, "")
                src = tf.extractfile(member)
                if src is None:
                    raise UnsafeMemberError(f"archive member {member.name!r} cannot be read as a file")
                fd = os.open(dest / entry["path"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with src, os.fdopen(fd, "wb") as out:
                    size, digest = _hash_copy(src, out, entry["bytes"])
                _check_entry(entry, size, digest)
    except (EOFError, zlib.error, tarfile.ReadError, tarfile.CompressionError) as exc:
        raise TruncatedArchiveError(f"{archive} is truncated or corrupt ({exc}); get the bundle again") from None
    except tarfile.TarError as exc:
        raise NotABundleError(f"{archive} is not a readable .tar.gz ({exc})") from None
    return manifest


def _read_member(tf: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    src = tf.extractfile(member)
    if src is None:
        raise UnsafeMemberError(f"archive member {member.name!r} cannot be read as a file")
    with src:
        return src.read(MAX_MANIFEST_BYTES + 1)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One class: its index, label and softmax score."""

    index: int
    label: str
    score: float


class Bundle:
    """An opened, verified bundle. Use `Bundle.open(path)`; a context manager that removes what it extracted."""

    def __init__(self, root: Path, manifest: dict[str, Any], cleanup: Path | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self._cleanup = cleanup
        self._runner: Runner | None = None
        self._artifact: dict[str, Any] | None = None
        try:
            self.preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
        except InputError as exc:
            raise ManifestError(f"{MANIFEST} has impossible preprocessing: {exc}") from None
        try:
            labels = (root / manifest["labels_file"]).read_bytes().decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise ManifestError(f"{manifest['labels_file']} is not UTF-8 text") from None
        if len(labels) != manifest["num_labels"]:
            raise ManifestError(
                f"{manifest['labels_file']} has {len(labels)} lines, the manifest says {manifest['num_labels']} labels"
            )
        self.labels = labels
        refuse_simulated_engines(root, manifest["artifacts"])

    @classmethod
    def open(cls, path: Path | str, extract_to: Path | None = None, max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
        """Open a bundle directory or .tar.gz, verifying it completely before returning.

        An archive is extracted into `extract_to` (created; must not exist or be empty) or a temporary
        directory that `close()` removes.
        """
        path = Path(path)
        if path.is_dir():
            return cls(path, verify_directory(path))
        if not path.is_file():
            raise NotABundleError(f"{path} does not exist; give a bundle directory or .tar.gz")
        if extract_to is not None:
            extract_to.mkdir(parents=True, exist_ok=True)
            if any(extract_to.iterdir()):
                raise InputError(f"{extract_to} is not empty; give an empty or new directory to extract into")
            dest, cleanup = extract_to, None
        else:
            dest = Path(tempfile.mkdtemp(prefix="ghost-bundle-"))
            cleanup = dest
        try:
            manifest = extract_archive(path, dest, max_bytes)
            return cls(dest, manifest, cleanup)
        except BaseException:
            for item in dest.iterdir():  # only what this call extracted: dest was new or empty
                item.unlink()
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True)
            raise

    def close(self) -> None:
        """Release the runner and remove a temporary extraction."""
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None
        if self._cleanup is not None:
            shutil.rmtree(self._cleanup, ignore_errors=True)
            self._cleanup = None

    def __enter__(self) -> Bundle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def artifact(self) -> dict[str, Any]:
        """The artifact the bundle runs: an engine when TensorRT is importable, else the first ONNX."""
        if self._artifact is None:
            self._artifact = choose_artifact(self.manifest["artifacts"], _tensorrt_available())
        return self._artifact

    def runner(self) -> Runner:
        """The runner of the chosen artifact, created (and for an engine, compatibility-checked) once."""
        if self._runner is None:
            art = self.artifact
            path = self.root / art["file"]
            if art["kind"] == "engine":
                entry = art.get("tensorrt") or {}
                _check_engine_here(entry)
                from ghost_deploy.backends.trt.runner import TensorRTRunner

                origin = _origin(entry)
                self._runner = TensorRTRunner(path, origin.version_compatible, origin.dla_core)
            else:
                from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner

                self._runner = OnnxRuntimeRunner(path)
            self._runner.activate()
        return self._runner

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for a preprocessed NCHW batch of any size.

        A model with a fixed batch N runs N rows at a time, the last group padded with copies of its last row
        (the padding's outputs are dropped); a dynamic batch runs at most its profile's MAX rows at a time.
        """
        inp = self.manifest["input"]
        shape = list(inp["shape"])
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != len(shape) or list(batch.shape[1:]) != shape[1:] or batch.shape[0] < 1:
            raise InputError(f"expected a batch of shape {['N', *shape[1:]]} with N >= 1, got {list(batch.shape)}")
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
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def preprocess(self, image: Image.Image | np.ndarray | Path | str) -> np.ndarray:
        """A CHW float32 array from an image file, a PIL image, an HxWx3 uint8 array, or a preprocessed CHW array."""
        if isinstance(image, (str, Path)):
            return preprocess_image(load_rgb(Path(image)), self.preprocessing)
        if isinstance(image, Image.Image):
            return preprocess_image(image.convert("RGB"), self.preprocessing)
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
            return preprocess_image(Image.fromarray(arr, mode="RGB"), self.preprocessing)
        if arr.ndim == 3 and list(arr.shape) == self.manifest["input"]["shape"][1:]:
            return arr.astype(np.float32, copy=False)
        raise InputError(
            f"predict takes an image path, a PIL image, an HxWx3 uint8 array or a preprocessed array of shape "
            f"{self.manifest['input']['shape'][1:]}; got an array of shape {list(arr.shape)} ({arr.dtype})"
        )

    def predict(self, image: Image.Image | np.ndarray | Path | str, top_k: int = 5) -> list[Prediction]:
        """The top-k labels with softmax scores for one image, best first."""
        logits = self.infer(self.preprocess(image)[None])[self.manifest["output"]["name"]][0].astype(np.float64)
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
        order = np.argsort(-scores, kind="stable")[: max(1, top_k)]
        return [Prediction(int(i), self._label(int(i)), float(scores[i])) for i in order]

    def _label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)


def choose_artifact(artifacts: Sequence[dict[str, Any]], tensorrt_here: bool) -> dict[str, Any]:
    """An engine when TensorRT is available, else the first ONNX; an engine-only bundle needs TensorRT."""
    engines = [a for a in artifacts if a["kind"] == "engine"]
    onnx = [a for a in artifacts if a["kind"] == "onnx"]
    if engines and (tensorrt_here or not onnx):
        return engines[0]
    return onnx[0]


def _tensorrt_available() -> bool:
    from ghost_deploy.machine.probe import tensorrt_installed

    return tensorrt_installed()  # a distribution (or the simulator), not the stubs' namespace package


def _check_engine_here(origin: dict[str, Any]) -> None:
    """Check the engine's TensorRT version and compute capability against this machine."""
    from ghost_deploy.errors import MissingDependencyError
    from ghost_deploy.machine.probe import gpus, jetson, tensorrt_version

    trt_here = tensorrt_version()
    if trt_here is None:
        raise MissingDependencyError("tensorrt", "trt", "Running the TensorRT engine of this bundle")
    found = gpus()
    check_engine_origin(origin, trt_here, found[0].compute_capability if found else None, jetson() is not None)


def check_engine_origin(
    origin: dict[str, Any], trt_here: str, cc_here: str | None, jetson_here: bool = False
) -> None:
    """Raise EngineMismatchError when the manifest's engine cannot run on TensorRT `trt_here` / GPU `cc_here`."""
    from ghost_deploy.backends.trt.compat import check_compatible

    try:
        check_compatible(_origin(origin), trt_here, cc_here, jetson_here)
    except InputError as exc:
        raise EngineMismatchError(str(exc)) from None


def _origin(entry: dict[str, Any]) -> Any:
    """The EngineOrigin a manifest's `tensorrt` entry describes."""
    from ghost_deploy.backends.trt.compat import EngineOrigin

    core = entry.get("dla_core")
    return EngineOrigin(
        trt_version=str(entry.get("version", "")),
        compute_capability=entry.get("compute_capability"),
        version_compatible=bool(entry.get("version_compatible", False)),
        hardware_compatibility=entry.get("hardware_compatibility"),
        dla_core=core if isinstance(core, int) else None,
    )


def refuse_simulated_engines(root: Path, artifacts: Sequence[dict[str, Any]]) -> None:
    """A bundle whose engine was built by the TensorRT simulator opens only under that simulation (exit 2).

    Checked at open, before any dependency: a simulated engine must never be mistaken for a device's.
    """
    from ghost_deploy.machine import probe

    for art in artifacts:
        if art["kind"] != "engine":
            continue
        entry = art.get("tensorrt") or {}
        if not entry.get("simulated") and not _simulated_plan(root / art["file"]):
            continue
        sim = probe.simulation()
        if sim is None:
            raise EngineMismatchError(
                f"{art['file']} was built by a SIMULATED TensorRT {entry.get('version', '?')} (ghost-deploy's test "
                "simulator, GHOST_DEPLOY_SIMULATE_TRT): it is no engine for a GPU; rebuild it on the device "
                f"(bash {art['file']}.build.sh, or ghost-deploy build)"
            )
        check_engine_origin(entry, str(sim.version), None)


def _simulated_plan(path: Path) -> bool:
    from ghost_deploy.testing.trtsim.plan import is_simulated_plan

    return is_simulated_plan(path)

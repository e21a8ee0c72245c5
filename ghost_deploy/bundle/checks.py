"""What `Bundle.open` and `pack` check before anything runs: the manifest, the files, and the model against both.

The manifest is strict JSON validated against its JSON Schema (metrics typed, sizes bounded); a directory
holds plain, unlinked files matching the manifest's sizes and sha256; every ONNX artifact is parsed (never
run) to check that it is ONNX, that no tensor points at external data (a bundle may not read outside itself,
whatever ONNX Runtime version is installed), and that its input and output names, shapes and classes are
the manifest's. The manifest's batch is bounded as `--batch` is (it sizes what `Bundle.infer` allocates).

Every file name, number and cross-reference is checked: names match the schema's pattern in full (no trailing
newline), no JSON object names a key twice, every file the manifest refers to is in its file list. What is
checked is what runs: `read_verified` reads a file once, checking its size and sha256, and the ONNX artifacts
are parsed (and later given to ONNX Runtime) from those bytes, never read again from the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import onnx

from ghost_deploy.backends.onnx.guard import check_untrusted
from ghost_deploy.bundle.errors import (
    BundleError,
    ExternalDataError,
    ManifestError,
    MissingFileError,
    NotABundleError,
    SchemaVersionError,
    TamperedFileError,
    UnexpectedFileError,
    UnsafeMemberError,
    show,
)
from ghost_deploy.config import MAX_BATCH, MAX_BATCH_PIXELS
from ghost_deploy.fileio import loads_strict

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
MAX_MEMBERS = 64


def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema, as shipped in the package."""
    text = resources.files("ghost_deploy.bundle").joinpath("manifest.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _is_integer(_checker: object, value: object) -> bool:
    """JSON Schema calls 32.0 an integer; Python's file reads, slices and shapes do not (a 0.0 size once reached
    `read()` as a TypeError), so a manifest's integers must be written as integers."""
    return isinstance(value, int) and not isinstance(value, bool)


_StrictValidator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]  # (jsonschema: unannotated)
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def validate_manifest(manifest: object) -> dict[str, Any]:
    """Check the schema version, the JSON Schema and the cross-references; return the manifest."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{MANIFEST} must hold a JSON object, got {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ManifestError(f"{MANIFEST} has no integer schema_version (got {show(repr(version))}); not a bundle")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{MANIFEST} has schema version {version}; this ghost-deploy reads version {SCHEMA_VERSION}: "
            "use the ghost-deploy that packed it, or repack the bundle with this one"
        )
    validator = _StrictValidator(manifest_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
    if error is not None:
        where = "/".join(str(p)[:40] for p in error.absolute_path) or "(top level)"
        raise ManifestError(f"{MANIFEST} fails its schema at {where}: {error.message[:300]}")
    names = [f["path"] for f in manifest["files"]]
    if len(set(names)) != len(names):
        raise ManifestError(f"{MANIFEST} lists a file twice: {sorted(n for n in names if names.count(n) > 1)[0]}")
    referenced = [manifest["labels_file"]] + [a["file"] for a in manifest["artifacts"]]
    referenced += [manifest["reference"][k] for k in ("inputs", "outputs") if "reference" in manifest]
    referenced += [manifest["deepstream"]["file"]] if "deepstream" in manifest else []
    referenced += [a["report"] for a in manifest["artifacts"] if "report" in a]
    for art in manifest["artifacts"]:
        build = art.get("device_build") or {}
        referenced += [g["file"] for g in (build.get("onnx") or {}).values()]
        referenced += [build["calibration_cache"]] if build.get("calibration_cache") else []
    for name in referenced:
        if name not in names:
            raise ManifestError(f"{MANIFEST} refers to {name}, which its file list does not have")
    default = manifest.get("default_artifact")
    if default is not None and default not in {a["file"] for a in manifest["artifacts"]}:
        raise ManifestError(f"{MANIFEST} names {default} as its default artifact, which is not one of its artifacts")
    _check_batch(manifest)
    return manifest


def _check_batch(manifest: dict[str, Any]) -> None:
    """The manifest's batch within `--batch`'s bounds: at most MAX_BATCH, and batch x crop^2 at most
    MAX_BATCH_PIXELS (`Bundle.infer` pads a short batch to the fixed one); a dynamic range with MIN <= OPT <= MAX."""
    inp, crop = manifest["input"], manifest["preprocessing"]["crop"]
    dyn = inp.get("dynamic_batch")
    if isinstance(dyn, dict) and not 1 <= dyn["min"] <= dyn["opt"] <= dyn["max"] <= MAX_BATCH:
        raise ManifestError(
            f"{MANIFEST}: input dynamic_batch min {dyn['min']}, opt {dyn['opt']}, max {dyn['max']}: need "
            f"1 <= min <= opt <= max <= {MAX_BATCH}; the manifest was changed, get the bundle again"
        )
    batches = {"fixed batch": inp["shape"][0], "dynamic_batch max": dyn["max"] if isinstance(dyn, dict) else 0}
    for what, batch in batches.items():
        if batch > MAX_BATCH or batch * crop * crop > MAX_BATCH_PIXELS:
            fits = max(1, min(MAX_BATCH, MAX_BATCH_PIXELS // (crop * crop)))
            raise ManifestError(
                f"{MANIFEST}: input {what} {batch} at {crop} x {crop} is more than a bundle may ask for (at most "
                f"{fits} at this size, as --batch); the manifest was changed, get the bundle again"
            )


def parse_manifest(data: bytes) -> dict[str, Any]:
    """Strict JSON (no NaN, no Infinity) of at most MAX_MANIFEST_BYTES, validated."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes; refusing it")
    try:
        text = data.decode("utf-8")
        manifest = loads_strict(text)
        json.loads(text, object_pairs_hook=_unique_keys)  # a key named twice: which one would a reader take?
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{MANIFEST} is not valid strict JSON: {str(exc)[:200]}") from None
    return validate_manifest(manifest)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: ValueError when an object names a key twice (json.loads keeps the last)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {show(key)} appears twice in one object")
        seen[key] = value
    return seen


def check_entry(entry: dict[str, Any], size: int, digest: str) -> None:
    """TamperedFileError when a file's size or sha256 is not the manifest's."""
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


def check_files_present(manifest: dict[str, Any], present: Sequence[str]) -> None:
    """Refuse a file the manifest does not list, and a listed file that is absent."""
    listed = {f["path"] for f in manifest["files"]}
    extra = sorted(set(present) - listed - {MANIFEST})
    if extra:
        raise UnexpectedFileError(f"the bundle holds {show(extra[0])}, which its manifest does not list; refusing it")
    missing = sorted(listed - set(present))
    if missing:
        raise MissingFileError(f"the bundle lacks {missing[0]}, which its manifest lists; get the bundle again")


def verify_directory(root: Path) -> dict[str, Any]:
    """Validate a bundle directory in place: manifest, no extra/missing/special/linked files, sizes and sha256."""
    names = _plain_files(root)
    if MANIFEST not in names:
        raise NotABundleError(f"{root} has no {MANIFEST}; it is not a bundle (make one with ghost-deploy pack)")
    manifest = parse_manifest(_read_limited(root / MANIFEST, MAX_MANIFEST_BYTES))
    check_files_present(manifest, names)
    for entry in manifest["files"]:
        size, digest = _hash_file(root / entry["path"], entry["bytes"])
        check_entry(entry, size, digest)
    return manifest


def _plain_files(root: Path) -> list[str]:
    names = []
    try:
        entries = list(os.scandir(root))
    except OSError as exc:
        raise NotABundleError(f"cannot read the bundle directory {root}: {exc.strerror}") from None
    for entry in entries:
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            raise UnsafeMemberError(f"{show(entry.name)} in {root} is a symbolic link; a bundle holds plain files only")
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeMemberError(
                f"{show(entry.name)} in {root} is not a plain file; a bundle holds plain files only"
            )
        if info.st_nlink > 1:
            raise UnsafeMemberError(
                f"{show(entry.name)} in {root} is a hard link ({info.st_nlink} names for one file): changing another "
                "name would change the bundle; a bundle holds plain files only"
            )
        names.append(entry.name)
        if len(names) > MAX_MEMBERS:
            raise UnsafeMemberError(f"{root} holds more than {MAX_MEMBERS} files; this is not a bundle")
    return names


def _read_limited(path: Path, limit: int, too_large: type[ManifestError | TamperedFileError] = ManifestError) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise NotABundleError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    if len(data) > limit:
        raise too_large(f"{path.name} is larger than {limit} bytes; refusing it")
    return data


def _hash_file(path: Path, limit: int) -> tuple[int, str]:
    """Size and sha256 of a file, reading at most `limit` + 1 bytes."""
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(min(1 << 20, limit + 1 - size) or 1):
                size += len(chunk)
                if size > limit:
                    break
                digest.update(chunk)
    except OSError as exc:
        raise NotABundleError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    return size, digest.hexdigest()


def check_model(root: Path, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Cross-check every artifact with the manifest before any session exists: format, external data, I/O.

    Returns the bytes of each ONNX artifact as read and checked here (size and sha256 too): what ONNX Runtime
    runs, so that a file replaced in the directory after this check is never run.
    """
    pre, inp = manifest["preprocessing"], manifest["input"]
    shape = inp["shape"]
    if len(shape) != 4 or shape[1:] != [3, pre["crop"], pre["crop"]]:
        raise ManifestError(
            f"{MANIFEST}: the input shape {shape} does not match the preprocessing's crop {pre['crop']} "
            "(expected N x 3 x crop x crop)"
        )
    classes = {manifest["num_labels"], manifest["model"]["num_classes"], manifest["output"]["shape"][-1]}
    if len(classes) != 1:
        raise ManifestError(
            f"{MANIFEST}: num_labels {manifest['num_labels']}, model num_classes {manifest['model']['num_classes']} "
            f"and the output shape {manifest['output']['shape']} disagree on the number of classes"
        )
    checked: dict[str, bytes] = {}
    for art in manifest["artifacts"]:
        if art["kind"] == "onnx":
            checked[art["file"]] = read_verified(root, manifest, art["file"])
            check_onnx_artifact(root / art["file"], manifest, checked[art["file"]])
        elif _parses_as_onnx(root / art["file"]):
            raise ManifestError(f"{art['file']} is an ONNX model, but {MANIFEST} says it is a TensorRT engine")
    models = dict(checked)
    for art in manifest["artifacts"]:  # what a device builds from is checked like an artifact, before any parser
        for graph in ((art.get("device_build") or {}).get("onnx") or {}).values():
            if graph["file"] not in checked:
                checked[graph["file"]] = read_verified(root, manifest, graph["file"])
                check_onnx_artifact(root / graph["file"], manifest, checked[graph["file"]])
    return models


def read_verified(root: Path, manifest: dict[str, Any], name: str) -> bytes:
    """The bytes of a listed file, read once (at most its declared size + 1) and checked against the manifest's
    size and sha256 (TamperedFileError): what the caller uses is exactly what was verified."""
    entry = next(f for f in manifest["files"] if f["path"] == name)
    data = _read_limited(root / name, entry["bytes"], TamperedFileError)
    check_entry(entry, len(data), hashlib.sha256(data).hexdigest())
    return data


def _parses_as_onnx(path: Path) -> bool:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return bool(model.graph.node) and bool(model.graph.output)


def check_onnx_artifact(
    path: Path, manifest: dict[str, Any] | None = None, data: bytes | None = None
) -> onnx.ModelProto:
    """Parse an ONNX artifact without running it; refuse external data and I/O that differ from the manifest.
    `data`: the file's bytes as already read and verified (then `path` only names it)."""
    try:
        model = onnx.load_from_string(data) if data is not None else onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf errors of many kinds: all mean 'not ONNX'
        raise ManifestError(f"{path.name} is not an ONNX model ({type(exc).__name__}), as its manifest says") from None
    if not model.graph.node:
        raise ManifestError(f"{path.name} is not an ONNX model (no graph nodes), as its manifest says")
    external = next(external_tensors(model.graph), None)
    if external is not None:
        raise ExternalDataError(
            f"{path.name}: tensor {show(external)} is stored outside the model (ONNX external data); a bundle may "
            "not read files outside itself. Re-export without external data (models under 2 GB never need it)"
        )
    check_untrusted(model, path.name, BundleError)  # allow-listed ops, bounded sizes: before any session
    if manifest is not None:
        _check_io(path.name, model, manifest)
    return model


def external_tensors(graph: onnx.GraphProto) -> Iterator[str]:
    """Names of the tensors of `graph` (and its subgraphs, attributes, sparse tensors) that use external data."""
    tensors = list(graph.initializer)
    tensors += [t for s in graph.sparse_initializer for t in (s.values, s.indices)]
    for node in graph.node:
        for attr in node.attribute:
            tensors += [attr.t, *attr.tensors]
            tensors += [t for s in (attr.sparse_tensor, *attr.sparse_tensors) for t in (s.values, s.indices)]
            for sub in (attr.g, *attr.graphs):
                yield from external_tensors(sub)
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            yield tensor.name or "(unnamed)"


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def _check_io(name: str, model: onnx.ModelProto, manifest: dict[str, Any]) -> None:
    initializers = {i.name for i in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    outputs = {o.name: o for o in model.graph.output}
    for role, table, entry in (("input", inputs, manifest["input"]), ("output", outputs, manifest["output"])):
        found = table.get(entry["name"])
        if found is None:
            raise ManifestError(
                f"{name} has no {role} named {show(entry['name'])} (it has {sorted(table)[:4]}), as {MANIFEST} says"
            )
        dims = _dims(found)
        want = [int(d) for d in entry["shape"]]
        if len(dims) != len(want) or any(w != d and -1 not in (w, d) for w, d in zip(want, dims, strict=False)):
            raise ManifestError(f"{name}: {role} {show(entry['name'])} has shape {dims}, {MANIFEST} says {want}")
        if role == "input" and dims[0] > 0 and want[0] != dims[0]:  # infer's batching follows the manifest
            raise ManifestError(
                f"{name}: input {show(entry['name'])} has a fixed batch of {dims[0]}, {MANIFEST} says {want[0]}"
            )
    if len(inputs) != 1:
        raise ManifestError(f"{name} has {len(inputs)} inputs; a bundle's model has one image input")


def gate_warnings(manifest: dict[str, Any]) -> list[str]:
    """One sentence per artifact that failed a gate or was packed with --allow-failed."""
    found = []
    for art in manifest["artifacts"]:
        gate = art.get("gate") or {}
        failed = [
            key
            for key in ("verification", "precision_verification")
            if isinstance(art.get(key), dict) and art[key].get("passed") is False
        ]
        if gate.get("passed") is False or failed:
            why = "; ".join(gate.get("why") or []) or ", ".join(failed) + " failed"
            found.append(
                f"{art['file']} did not pass its gates ({why[:300]}) and was packed anyway with --allow-failed; "
                "its outputs may be wrong"
            )
    return found

"""The errors of opening a bundle: each defect its own class, all of them `BundleError` (bad input, exit 2),
except `EngineRejected` (a failed verification, exit 4).

Re-exported by `ghost_deploy.bundle.runtime` and `ghost_deploy.runtime`, where applications import them.
"""

from __future__ import annotations

from ghost_deploy.errors import InputError, VerificationFailed


class BundleError(InputError):
    """A bundle that cannot be opened: malformed, tampered with, unsafe or made for another machine (exit 2)."""


class NotABundleError(BundleError):
    """The path is neither a bundle directory nor a readable .tar.gz with a manifest."""


class TruncatedArchiveError(BundleError):
    """The .tar.gz ends early."""


class UnsafeMemberError(BundleError):
    """An archive member or directory entry that could write outside the destination or is not a plain file."""


class ManifestError(BundleError):
    """manifest.json is not strict JSON, fails the manifest's JSON Schema, or does not describe the model."""


class SchemaVersionError(ManifestError):
    """The manifest's schema version is not one this ghost-deploy reads."""


class MissingFileError(BundleError):
    """A file listed in the manifest is absent."""


class UnexpectedFileError(BundleError):
    """A file is present that the manifest does not list."""


class TamperedFileError(BundleError):
    """A file's size or sha256 differs from the manifest's, or the archive's bytes were changed (corrupt)."""


class EngineMismatchError(BundleError):
    """The engine was built for another TensorRT version or GPU than this machine's."""


class EngineNotPreparedError(BundleError):
    """`engine="never"`: the engine this device needs is neither packed nor cached, and may not be built here."""


class EngineRejected(VerificationFailed):
    """An engine failed its verification against the bundle's reference set on this device: never used (exit 4).

    `result` holds the verification record (`verification`) and where the engine and its report were kept
    (`kept`), for the user to send back.
    """


class ExternalDataError(BundleError):
    """An ONNX artifact whose tensors point at external files: a bundle may not read outside itself."""


class BundleClosedError(BundleError):
    """The bundle was closed (`close()`, or the end of its `with` block): open it again to run it (exit 2)."""


def show(name: str, limit: int = 80) -> str:
    """A name for an error message: repr'd, cut to `limit` characters (a hostile name may be huge)."""
    return repr(name) if len(name) <= limit else repr(name[:limit]) + f"... ({len(name)} characters)"

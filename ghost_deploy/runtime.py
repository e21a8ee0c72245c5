"""The application runtime's stable import path: `from ghost_deploy.runtime import Bundle`.

The code lives in `ghost_deploy.bundle.runtime`; applications written against ghost-deploy 0.1 import it
from here, and keep working.
"""

from ghost_deploy.bundle.runtime import (
    Bundle,
    BundleClosedError,
    BundleError,
    EngineMismatchError,
    EngineNotPreparedError,
    EngineRejected,
    ExternalDataError,
    FailedGateWarning,
    ManifestError,
    MissingFileError,
    NotABundleError,
    Prediction,
    SchemaVersionError,
    TamperedFileError,
    TruncatedArchiveError,
    UnexpectedFileError,
    UnsafeMemberError,
)
from ghost_deploy.errors import NonFiniteOutputError

__all__ = [
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
    "NonFiniteOutputError",
    "NotABundleError",
    "Prediction",
    "SchemaVersionError",
    "TamperedFileError",
    "TruncatedArchiveError",
    "UnexpectedFileError",
    "UnsafeMemberError",
]

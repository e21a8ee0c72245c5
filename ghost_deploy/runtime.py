"""The application runtime's stable import path: `from ghost_deploy.runtime import Bundle`.

The code lives in `ghost_deploy.bundle.runtime`; applications written against ghost-deploy 0.1 import it
from here, and keep working.
"""

from ghost_deploy.bundle.runtime import (
    Bundle,
    BundleError,
    EngineMismatchError,
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

__all__ = [
    "Bundle",
    "BundleError",
    "EngineMismatchError",
    "ManifestError",
    "MissingFileError",
    "NotABundleError",
    "Prediction",
    "SchemaVersionError",
    "TamperedFileError",
    "TruncatedArchiveError",
    "UnexpectedFileError",
    "UnsafeMemberError",
]

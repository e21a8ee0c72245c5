"""The exception hierarchy of ghost-deploy and the exit codes the CLI maps it to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MISSING_DEPENDENCY = 3
EXIT_VERIFICATION_FAILED = 4


class GhostDeployError(Exception):
    """Root of every error ghost-deploy raises on purpose; `exit_code` is what the CLI returns."""

    exit_code = EXIT_FAILURE


class InputError(GhostDeployError):
    """Bad input or usage: a missing file, a wrong format, an impossible option (exit 2)."""

    exit_code = EXIT_USAGE


class CheckpointError(InputError):
    """A checkpoint that cannot be loaded or does not match the architecture (exit 2)."""


class MissingDependencyError(GhostDeployError):
    """An optional dependency is not installed; the message names the extra to install (exit 3)."""

    exit_code = EXIT_MISSING_DEPENDENCY

    def __init__(self, module: str, extra: str, purpose: str, message: str | None = None) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            message
            or f"{purpose} needs the Python package '{module}', which is not installed; "
            f"install the extra: pip install 'ghost-deploy[{extra}]'"
        )


class StepFailed(GhostDeployError):
    """A pipeline step failed at run time for a reason that is not the user's input (exit 1)."""


class VerificationFailed(GhostDeployError):
    """A verification or accuracy gate failed; the report is still written (exit 4).

    `result` carries whatever the failed job produced (its report), for callers that want it.
    """

    exit_code = EXIT_VERIFICATION_FAILED

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class NonFiniteOutputError(GhostDeployError):
    """A model gave NaN or Inf where results were expected: they are never returned as results (exit 4)."""

    exit_code = EXIT_VERIFICATION_FAILED

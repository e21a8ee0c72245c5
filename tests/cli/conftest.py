"""The command line run in the test's own process: no interpreter, torch or onnxruntime start-up per call."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from ghost_deploy.cli.main import export_main, main

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """`cli("ghost-export", ...)` or `cli("profile", ...)`: the exit code, standard output and error, as
    `tests.helpers.run_cli` gives them, from a call of the entry point in this process."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        code = export_main(list(args[1:])) if args[0] == "ghost-export" else main(list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    return run

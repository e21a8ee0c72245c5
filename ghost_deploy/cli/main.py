"""Command line: `ghost-deploy COMMAND` and `ghost-export` (= `ghost-deploy export`).

Each command lives in a small module of this package that turns its arguments into one call of a public
function. Nothing heavy is imported at start-up: `--help` works without torch, TensorRT or pycuda, and
imports neither onnx nor onnxruntime.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from ghost_deploy.cli import bundle, device, doctor, export, profile, report
from ghost_deploy.cli.summary import summary
from ghost_deploy.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, GhostDeployError, VerificationFailed
from ghost_deploy.fileio import strict_json
from ghost_deploy.report import OutputLost, print_line, silence
from ghost_deploy.version import __version__

_MEANING = {
    0: "success",
    1: "unexpected failure",
    2: "bad input or usage (one line; -v shows the traceback)",
    3: "missing optional dependency (the message names the extra to install)",
    4: "a verification or accuracy gate failed (the artifact is not moved into place; its report is written)",
}
# what an exit code means for the commands where it is not the export's meaning
_OWN_MEANING = {
    "run": {4: "the model gave NaN or Inf for an image (never printed as a result)"},
    "verify": {4: "the artifact failed verification (the report is still written)"},
    "doctor": {4: "--selftest: an engine failed its verification (the JSON says which)"},
    "pack": {4: "an artifact's report says a gate failed (refused unless --allow-failed)"},
}
_SIGNALS = (
    "130  interrupted (Ctrl-C); 143: terminated (SIGTERM); nothing half-written is left\n"
    "a standard output closed early (| head) ends the output quietly; the exit code stays the command's;\n"
    "one that cannot be written (a full disk) is exit 1 with one line on standard error: the files are in place"
)


def exit_codes(*codes: int, command: str | None = None) -> str:
    """The epilog listing the exit codes a command can return, with what each means for that command."""
    own = _OWN_MEANING.get(command or "", {})
    lines = [f"  {code}  {own.get(code, _MEANING[code])}" for code in codes]
    return "\n".join(["exit codes:", *lines, _SIGNALS])


ALL = (0, 1, 2, 3, 4)
EXIT_CODES = exit_codes(*ALL)

# name, fill(parser), one line of help, the exit codes it can return
COMMANDS: tuple[tuple[str, Callable[[argparse.ArgumentParser], None], str, tuple[int, ...]], ...] = (
    ("export", export.fill_export_parser, "checkpoint to a simplified, verified ONNX model (also: ghost-export)", ALL),
    ("verify", export.fill_verify_parser, "compare an ONNX artifact or an engine with its reference", ALL),
    ("sensitivity", export.fill_sensitivity_parser, "rank the INT8 layers by the top-1 agreement they cost", ALL[:4]),
    ("build", export.fill_build_parser, "build a TensorRT engine on the device from an ONNX made by ghost-export", ALL),
    ("doctor", doctor.fill_doctor_parser, "what this machine has for each target; --selftest on a device", ALL),
    ("profile", profile.fill_profile_parser, "latency like trtexec: warm-up, duration, percentiles", ALL[:4]),
    ("bench", profile.fill_bench_parser, "every target this machine can run, in one table", ALL[:4]),
    ("pack", bundle.fill_pack_parser, "a deployment bundle: artifacts, manifest, labels, build.sh", ALL),
    ("run", bundle.fill_run_parser, "run a bundle on images (exit 4: the model gave NaN or Inf)", ALL),
    ("inspect", bundle.fill_inspect_parser, "check a bundle, print its manifest and what would run here", (0, 1, 2)),
    (
        "prepare",
        device.fill_prepare_parser,
        "build and verify a bundle's engine on this device ahead of time (exit 4: rejected)",
        ALL,
    ),
    ("cache", device.fill_cache_parser, "list or prune the per-user engine cache", (0, 1, 2)),
    (
        "report",
        report.fill_report_parser,
        "one self-contained HTML page: targets, latency, layers, verification",
        (0, 1, 2),
    ),
)
DESCRIPTION = (
    "GhostNet to the edge: export a PyTorch checkpoint to a verified ONNX model (FP32, FP16, INT8) and a "
    "TensorRT engine, profile it like trtexec, and pack it for an embedded application."
)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem and where the help is (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _print_message(self, message: str, file: Any = None) -> None:
        """--help, --version and usage errors: into a closed pipe (`--help | head`), quietly."""
        if message:
            print_line(message.rstrip("\n"), file or sys.stderr)


def build_export_parser(prog: str = "ghost-export") -> argparse.ArgumentParser:
    """The parser of `ghost-export` / `ghost-deploy export`."""
    p = Parser(
        prog=prog,
        description="Export a GhostNet checkpoint (or an ONNX file) to a simplified, verified ONNX model, or to a "
        "TensorRT engine (--target trt-*); the report is written beside it.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.fill_export_parser(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The parser of `ghost-deploy`."""
    p = Parser(
        prog="ghost-deploy",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ghost-deploy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, fill, text, codes in COMMANDS:
        sp = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=exit_codes(*codes, command=name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        fill(sp)
    return p


def _dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None, prog: str) -> int:
    _escape_unencodable()
    try:
        args = parser.parse_args(argv)
        args.argv = list(argv if argv is not None else sys.argv[1:])
        args.command_line = [prog, *args.argv]  # what the reports record: ghost-deploy profile X, ghost-export Y
        with _sigterm_unwinds():
            return _run(args, prog)
    except BrokenPipeError:  # a reader gone mid-run (a warning into a closed standard error): stop, quietly
        silence(sys.stdout)
        silence(sys.stderr)
        return EXIT_FAILURE
    except OutputLost as exc:  # --help or --version into a full disk
        print_line(f"{prog}: error: {exc}", sys.stderr)
        return exc.exit_code


def _escape_unencodable() -> None:
    """Standard output and error write what their encoding lacks as backslash escapes (a label in Chinese under
    PYTHONIOENCODING=ascii or LC_ALL=C), so printing a result never fails after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


def _run(args: argparse.Namespace, prog: str) -> int:
    try:
        _simulation_notice(prog)
        report = args.handler(args)
    except VerificationFailed as exc:
        rep = getattr(exc.result, "report", exc.result)
        written = getattr(exc.result, "report_file", None)
        if isinstance(rep, dict) and written is not None:
            rep["report_file"] = str(written)
        if isinstance(rep, dict) and (args.json or not getattr(args, "quiet", False)):
            _print_result(_render(rep, args.json, args), prog)
        return _fail(prog, exc, args.verbose)
    except GhostDeployError as exc:
        return _fail(prog, exc, args.verbose)
    except KeyboardInterrupt:
        print_line(f"{prog}: interrupted; nothing half-written was left", sys.stderr)
        return 130
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:  # a path the user gave, unreadable
        if args.verbose:
            _traceback(exc)
        print_line(
            f"{prog}: error: cannot access {exc.filename}: {exc.strerror}; check the path and its permissions",
            sys.stderr,
        )
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # a closed pipe is no error of the job's: _dispatch ends quietly
    except Exception as exc:  # the last resort: one line, traceback with -v
        if args.verbose:
            _traceback(exc)
        print_line(f"{prog}: unexpected error: {type(exc).__name__}: {exc} (run with -v for the traceback)", sys.stderr)
        return EXIT_FAILURE
    wanted = args.json or not getattr(args, "quiet", False)
    if wanted and not _print_result(_render(report, args.json, args), prog):
        return EXIT_FAILURE
    return EXIT_OK


def _print_result(text: str, prog: str) -> bool:
    """The result on standard output (into a closed pipe, quietly); False, said on standard error, when it
    cannot be written: the command's work is done, only its printed result is lost."""
    try:
        print_line(text, sys.stdout)
    except OutputLost as exc:
        done = "the command itself finished (files it writes are in place): only its printed output is lost"
        print_line(f"{prog}: error: {exc}; {done}", sys.stderr)
        return False
    return True


def _simulation_notice(prog: str) -> None:
    """Under GHOST_DEPLOY_SIMULATE_TRT, switch the simulator on and say so, once, on standard error."""
    from ghost_deploy.machine.probe import simulate_from_env

    notice = simulate_from_env()
    if notice is not None:
        print_line(f"{prog}: {notice}", sys.stderr)


def _render(report: dict[str, Any], as_json: bool, args: argparse.Namespace) -> str:
    """The report as JSON, or the summary the command rendered itself, or the generic summary."""
    text = report.pop("human_summary", None)
    if not isinstance(text, str) and getattr(args, "selftest", False):
        from ghost_deploy.cli.doctor import render_selftest

        text = render_selftest(report)
    return strict_json(report) if as_json else text if isinstance(text, str) else summary(report)


class Terminated(SystemExit):
    """SIGTERM, raised where the main thread is, so that every `finally` removes what the run had staged."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While a command runs, SIGTERM unwinds the stack like Ctrl-C does (exit 143) instead of killing outright."""

    def terminate(signum: int, frame: object) -> None:
        print_line("interrupted by SIGTERM; nothing half-written is left", sys.stderr)
        raise Terminated(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave the process's handling alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(prog: str, exc: GhostDeployError, verbose: bool) -> int:
    if verbose:
        _traceback(exc)
    print_line(f"{prog}: error: {exc}", sys.stderr)
    return exc.exit_code


def _traceback(exc: BaseException) -> None:
    """-v: the traceback on standard error, unless standard error cannot take it."""
    with contextlib.suppress(OSError, ValueError):
        traceback.print_exception(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `ghost-deploy`."""
    return _dispatch(build_parser(), argv, "ghost-deploy")


def export_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `ghost-export` (the short form of `ghost-deploy export`)."""
    return _dispatch(build_export_parser(), argv, "ghost-export")


if __name__ == "__main__":
    sys.exit(main())

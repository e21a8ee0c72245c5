"""`ghost-deploy report ARTIFACT_OR_BUNDLE... -o report.html`: one self-contained page to look at.

Bundles are opened and verified here (every file's size and sha256 against the manifest; an archive is
extracted safely into a temporary folder); the view package receives their folder and manifest as data.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ghost_deploy.cli.flags import common
from ghost_deploy.errors import InputError
from ghost_deploy.fileio import check_writable


def fill_report_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy report`."""
    p.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        metavar="ARTIFACT_OR_BUNDLE",
        help="artifacts (.onnx/.engine with their <file>.json beside; a <file>.profile.json beside is used too), "
        "report/profile/sensitivity .json files, bundle directories or .tar.gz",
    )
    p.add_argument(
        "-o", "--output", type=Path, default=Path("report.html"), metavar="FILE", help="the page (report.html)"
    )
    common(p)
    p.set_defaults(handler=run_report)


def is_bundle(path: Path) -> bool:
    """A bundle is a directory or a .tar.gz / .tgz file."""
    return path.is_dir() or path.name.endswith((".tar.gz", ".tgz"))


@contextlib.contextmanager
def opened_bundle(path: Path) -> Iterator[tuple[Path, Mapping[str, Any]]]:
    """A verified bundle's folder and manifest; an archive is extracted into a temporary folder, removed after.

    Only the integrity is checked (what `Bundle.open` checks before running): a report may show a bundle made
    for another machine, or by the TensorRT simulator, which it labels so.
    """
    from ghost_deploy.bundle.runtime import extract_archive, verify_directory

    if path.is_dir():
        yield path, verify_directory(path)
        return
    if not path.is_file():
        raise InputError(f"{path} does not exist; give a bundle directory or .tar.gz")
    tmp = Path(tempfile.mkdtemp(prefix="ghost-report-"))
    try:
        yield tmp, extract_archive(path, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_report(args: argparse.Namespace) -> dict[str, Any]:
    """Gather every input, render the page and write it to -o."""
    from ghost_deploy.view.collect import Collector
    from ghost_deploy.view.page import write_page

    check_writable(args.output)
    collector = Collector()
    for path in args.inputs:
        if is_bundle(path):
            with opened_bundle(path) as (root, manifest):
                collector.add_bundle(f"{path} (bundle, verified)", root, manifest, given=path)
        else:
            collector.add_path(path)
    page = collector.page()
    write_page(page, args.output)
    rows = [
        {"file": t.file, "target": t.target, "profiled": t.profile is not None, "simulated": t.simulated}
        for t in page.targets
    ]
    text = f"wrote {args.output}: {len(rows)} target(s), {len(page.rankings)} sensitivity ranking(s)"
    if page.simulated:
        text += "; figures from the TensorRT simulator are labelled SIMULATED"
    return {"report": str(args.output), "targets": rows, "human_summary": text}

"""Write the report page: from any files (`ghost-deploy report`) or from a bundle being packed (`report.html`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ghost_deploy.data.walk import shown_name
from ghost_deploy.fileio import write_bytes_atomic
from ghost_deploy.view.collect import Collector
from ghost_deploy.view.data import Page
from ghost_deploy.view.html import render_page

BUNDLE_PAGE = "report.html"


def write_page(page: Page, path: Path) -> None:
    """Render `page` and write it to `path` atomically, as UTF-8 (an image's name that is not UTF-8 shown as
    `\\xff`: the file names a report carries are the bytes found on disk)."""
    write_bytes_atomic(path, shown_name(render_page(page, output=str(path))).encode("utf-8"))


def bundle_page(root: Path, manifest: Mapping[str, Any], artifacts: Sequence[Path] = ()) -> str:
    """Write `report.html` into the bundle directory `root` being packed; return its file name.

    `artifacts` are the packed files where they came from: a `<artifact>.profile.json` beside one gives the
    page its per-query times even when the manifest keeps only a latency summary.
    """
    collector = Collector()
    collector.add_bundle("this bundle", root, manifest)
    for artifact in artifacts:
        profile = artifact.with_name(artifact.name + ".profile.json")
        if profile.is_file():
            collector.add_profile(profile)
    write_page(collector.page(), root / BUNDLE_PAGE)
    return BUNDLE_PAGE

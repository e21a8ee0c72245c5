"""Render a report page to a PNG in headless Chromium, to look at it as a person would.

    python tools/render_report.py report.html -o report.png [--width 1280] [--height 3000] [--full] [--chromium PATH]

Uses Debian's `chromium` package (`apt-get install -y chromium`). Chromium runs with a fresh profile, without
network services, background updates or sandbox (as root in a container), and loads nothing but the file.
The PNG is the window: `--height` CSS pixels of the page from its top; with `--full` (and a tall enough
`--height`) it is cut where the page ends.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium_binary(given: str | None) -> str:
    """The Chromium to run: --chromium, else `chromium` or `chromium-browser` on the PATH."""
    for name in (given, "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return str(shutil.which(name))
    sys.exit("render_report: no Chromium found; apt-get install -y chromium (or pass --chromium PATH)")


def render(page: Path, png: Path, width: int, height: int, chromium: str, timeout: float = 120) -> None:
    """Screenshot `page` at width x height CSS pixels into `png`."""
    with tempfile.TemporaryDirectory(prefix="render-report-") as profile:
        cmd = [
            chromium,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png.resolve()}",
            f"--window-size={width},{height}",
            page.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not png.is_file():
        sys.exit(f"render_report: chromium failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")


def trim_bottom(png: Path, margin: int = 24) -> tuple[int, int]:
    """Cut the empty window below the page (rows of the bottom-right pixel's colour); return the new size."""
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
    width, height = rgb.size
    background = rgb.getpixel((width - 1, height - 1))
    bottom = height
    while bottom > 1 and all(rgb.getpixel((x, bottom - 1)) == background for x in range(0, width, 4)):
        bottom -= 1
    if bottom + margin < height:
        rgb.crop((0, 0, width, bottom + margin)).save(png)
        return width, bottom + margin
    return width, height


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and render."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("page", type=Path, help="the HTML file (ghost-deploy report -o FILE)")
    p.add_argument("-o", "--output", type=Path, help="the PNG (default: PAGE with .png)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--chromium", help="the Chromium binary")
    p.add_argument("--full", action="store_true", help="cut the PNG where the page ends (render with a tall --height)")
    args = p.parse_args(argv)
    if not args.page.is_file():
        sys.exit(f"render_report: {args.page} does not exist")
    png = args.output or args.page.with_suffix(".png")
    render(args.page, png, args.width, args.height, chromium_binary(args.chromium))
    size = trim_bottom(png) if args.full else (args.width, args.height)
    print(f"wrote {png} ({size[0]} x {size[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

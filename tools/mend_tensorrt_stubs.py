"""Make the `tensorrt-stubs` package usable by mypy (idempotent).

    pip install --no-deps tensorrt-stubs==10.13.0.35.1 && python tools/mend_tensorrt_stubs.py

As shipped, its stub folders `tensorrt/` and `tensorrt_bindings/` lack a `py.typed` marker, and
`tensorrt_bindings/tensorrt.pyi` has two syntax errors: parameters named `in` (a keyword), and a
`channel_axis` without a default after defaulted parameters in `add_scale_nd`. (--no-deps: the package
depends on TensorRT's library wheel, which cannot be downloaded here.)
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path


def mend(site: Path) -> list[str]:
    """Mend the stubs under `site`; returns what was changed."""
    changed = []
    for folder in ("tensorrt", "tensorrt_bindings"):
        marker = site / folder / "py.typed"
        if (site / folder).is_dir() and not marker.exists():
            marker.write_text("partial\n" if folder == "tensorrt" else "")
            changed.append(f"added {marker}")
    stub = site / "tensorrt_bindings" / "tensorrt.pyi"
    if not stub.is_file():
        raise SystemExit(f"no {stub}: install it first with pip install --no-deps tensorrt-stubs")
    text = stub.read_text()
    fixed = re.sub(r"([(,]\s*)in(\s*:)", r"\1in_\2", text)
    fixed = fixed.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = 0)")
    if fixed != text:
        stub.write_text(fixed)
        changed.append(f"fixed syntax in {stub}")
    return changed


if __name__ == "__main__":
    site_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sysconfig.get_paths()["purelib"])
    for line in mend(site_dir) or ["tensorrt-stubs already mended"]:
        print(line)

"""`ghost-deploy doctor`: what this machine has for each target."""

from __future__ import annotations

import argparse
from typing import Any

from ghost_deploy.cli.flags import common


def fill_doctor_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy doctor`."""
    common(p)
    p.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace) -> dict[str, Any]:
    """Diagnose this machine."""
    from ghost_deploy.machine.doctor import diagnose

    return diagnose()

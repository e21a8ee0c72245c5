"""Every trtsim test starts and ends with no simulation installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ghost_deploy.testing import trtsim


@pytest.fixture(autouse=True)
def _no_simulation_left() -> Iterator[None]:
    trtsim.uninstall()
    yield
    trtsim.uninstall()

"""The one TensorRT probe: installed version by metadata (never by import), the JetPack 6 default, GPU parsing."""

from __future__ import annotations

import importlib.metadata

import pytest

from ghost_deploy.backends.trt.calib_cache import version_int
from ghost_deploy.machine import probe


def test_default_trt_version(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_trt(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(probe.metadata, "version", no_trt)
    assert probe.trt_version_for_plan(None) == ("10.3.0", "default (JetPack 6)")

    def cu12_only(name: str) -> str:
        if name == "tensorrt-cu12":
            return "10.13.0.35"
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(probe.metadata, "version", cu12_only)
    assert probe.trt_version_for_plan(None) == ("10.13.0.35", "installed")
    assert version_int(probe.trt_version_for_plan(None)[0]) == 101300

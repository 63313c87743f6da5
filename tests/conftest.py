"""Shared fixtures: real data through DOMAINFM_DATA (CI sets it and fails loudly when it is missing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real data sets. Outside CI a missing DOMAINFM_DATA skips with the reason; in CI it fails."""
    env = os.environ.get("DOMAINFM_DATA")
    if not env or not Path(env).is_dir():
        if os.environ.get("CI"):
            pytest.fail("DOMAINFM_DATA is not set or missing in CI")
        pytest.skip("DOMAINFM_DATA is not set (set it to ../shared/data)")
    return Path(env)


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOMAINFM_PROGRESS", "0")

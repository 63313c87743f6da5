"""Fixtures for the evaluation harness tests: a sandbox (skips with the reason when bwrap cannot run here)."""

from __future__ import annotations

import pytest

from domainfm.code.evaluate.sandbox import Sandbox, SandboxLimits
from domainfm.core.errors import UserError


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    sb = Sandbox(SandboxLimits(timeout=10.0))
    try:
        sb.check()
    except UserError as exc:
        pytest.skip(f"no working bubblewrap here: {exc}")
    return sb

"""Fixtures of the MIL tests (helpers live in mil_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mil_helpers import write_labelled_h5


@pytest.fixture
def labelled_h5(tmp_path: Path) -> Path:
    return write_labelled_h5(tmp_path / "features.h5")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """MIL models are tiny: one thread is fastest, and avoids oversubscribing a shared machine."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)

"""One local Ray instance (2 CPUs) for the whole test session, and small real inputs.

`ray.init` takes seconds, so the instance is started once; in-process commands with ``--executor ray``
reuse it (and leave it running), subprocesses join it with ``--ray-address``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from scale_helpers import FAST, REPOS, STDLIB


@pytest.fixture(scope="session")
def ray_address() -> str:
    """Start the session's Ray instance (2 CPUs) through our own pool; its GCS address."""
    from domainfm.scale.ray_pool import RayPool

    pool = RayPool(workers=2)
    ray = pool._ensure()
    yield ray.get_runtime_context().gcs_address
    pool.close()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("scale") / "src"
    for repo, names in REPOS.items():
        (src / repo).mkdir(parents=True)
        shutil.copy(STDLIB / "LICENSE.txt", src / repo / "LICENSE")
        for name in names:
            shutil.copy(STDLIB / name, src / repo / name)
    return src


@pytest.fixture(scope="session")
def curated_local(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the local executor, 1 worker."""
    from domainfm.cli import main

    out = tmp_path_factory.mktemp("ref") / "out"
    assert main(["code", "curate", str(corpus), "-o", str(out), *FAST]) == 0
    return out

"""`pipeline.global_dedup_mode`: where `code curate`'s stage 2 runs and the memory its one task reserves."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from domainfm.code.curate.config import CurateConfig
from domainfm.code.curate.pipeline import global_dedup_mode, stage2_memory


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "s1").mkdir()
    for r, rows in enumerate((3, 4)):  # two stage-1 shards, 7 kept records
        pq.write_table(pa.table({"swhid": [f"swh:{r}:{i}" for i in range(rows)]}), tmp_path / "s1" / f"kept-{r:05d}.parquet")
    return tmp_path


PLAN = {"shards": [[[0, 0, 1]], [[1, 0, 1]]]}


def test_the_bound_is_the_measured_line_with_headroom() -> None:
    # docs/dedup_at_scale.md: 59 MiB + 9.47 KB per record measured (bench_stage2_memory.py)
    for n in (3_110, 12_526, 23_874, 250_000):
        assert stage2_memory(n) >= 59 * 2**20 + 9_470 * n * 1.5
    assert stage2_memory(250_000) <= 4096 << 20 < stage2_memory(260_000)  # the default limit: ~250k records


@pytest.mark.parametrize(("opts", "expected"), [
    ({"executor": "local"}, ("local", 0)),
    ({"executor": "ray"}, ("task", stage2_memory(7))),  # auto, far below 4 GiB
    ({"executor": "ray", "ray_dedup": "task", "ray_dedup_task_mb": 1}, ("task", stage2_memory(7))),
    ({"executor": "ray", "ray_dedup_task_mb": 100}, ("data", 0)),  # auto, the bound's 128 MiB base is over
    ({"executor": "ray", "ray_dedup": "data"}, ("data", 0)),
])
def test_mode_and_reserved_memory(work: Path, opts: dict, expected: tuple[str, int]) -> None:
    assert global_dedup_mode(CurateConfig(**opts), work, PLAN) == expected


def test_a_finished_stage_2_reads_nothing(work: Path) -> None:
    for p in (work / "s1").iterdir():
        p.unlink()  # removed after a finished run (no --keep-work)
    (work / "s2" / "completions").mkdir(parents=True)
    (work / "s2" / "completions" / "00000.json").write_text("{}")
    assert global_dedup_mode(CurateConfig(executor="ray", ray_dedup="auto"), work, PLAN) == ("task", 0)

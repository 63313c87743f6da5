"""`--executor ray` gives the local executor's outputs, byte for byte: curate, tile, extract, index;
a Ray worker killed mid-task is retried; a driver killed mid-run resumes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scale_helpers import FAST, cli_env, completions, tree_hashes

from domainfm.cli import main

DATA = Path(os.environ.get("DOMAINFM_DATA", "")) / "pathology" / "slides"
SLIDE = DATA / "CMU-1-Small-Region.svs"  # real Aperio slide, 2220 x 2967 px at 0.499 um/px
CLI = "import sys; from domainfm.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize(("mode", "ran"), [("auto", "one Ray task"), ("data", "Ray Data shuffles"),
                                           ("auto --ray-dedup-task-mb 100", "Ray Data shuffles")])
def test_curate_ray_equals_local(tmp_path: Path, corpus: Path, curated_local: Path, ray_address: str, mode: str,
                                 ran: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Both global-dedup paths (`pipeline.global_dedup_mode`) give the local bytes. ``auto`` picks the
    one task for this small corpus (its measured bound, 128 MiB + 16 KiB per record, is far below 4 GiB)
    and the Ray Data shuffles when the limit is under the 128 MiB base."""
    out = tmp_path / "ray"
    args = ["code", "curate", str(corpus), "-o", str(out), "--executor", "ray", "--workers", "2", *FAST]
    assert main([*args, "--ray-dedup", *mode.split()]) == 0
    assert f"global dedup: {ran}" in capsys.readouterr().err
    ref = tree_hashes(curated_local)
    assert len([k for k in ref if k.startswith("data/")]) >= 3  # several shards, so the split matters
    assert tree_hashes(out) == ref
    for stage in ("s1", "s2", "s3"):
        assert completions(out, stage) == completions(curated_local, stage)


@pytest.mark.slow
def test_curate_worker_killed_and_driver_killed(tmp_path: Path, corpus: Path, curated_local: Path,
                                                ray_address: str) -> None:
    """A driver subprocess joins the session's cluster (--ray-address); the first task SIGKILLs its own
    worker (`DOMAINFM_RAY_KILL_ONCE`) and Ray retries it: stage s1 completes. Then the driver is kill -9'd
    and the same command, run again, resumes; the outputs equal the local executor's."""
    flags = tmp_path / "flags"
    flags.mkdir()
    out = tmp_path / "w"
    args = ["code", "curate", str(corpus), "-o", str(out), "--executor", "ray", "--ray-address", ray_address, *FAST]
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], env=cli_env(DOMAINFM_RAY_KILL_ONCE=str(flags)),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n_shards = len(completions(curated_local, "s1"))
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(completions(out, "s1")) < n_shards:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the driver (and anything it started), after s1
    proc.wait()
    assert (flags / "killed").exists()  # a worker died mid-run ...
    done_before = completions(out, "s1")
    assert len(done_before) == n_shards  # ... and its task was retried: every s1 shard finished
    assert not (out / "stats.json").exists()
    assert main(args) == 0  # the same command resumes (joining the same cluster)
    assert tree_hashes(out) == tree_hashes(curated_local)
    assert completions(out, "s1") == done_before == completions(curated_local, "s1")


@pytest.fixture(scope="module")
def tiled_local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tile") / "local"
    assert main(["pathology", "tile", str(SLIDE), "-o", str(out)]) == 0
    return out


def test_tile_ray_equals_local(tmp_path: Path, tiled_local: Path, ray_address: str) -> None:
    out = tmp_path / "ray"
    assert main(["pathology", "tile", str(SLIDE), "-o", str(out), "--executor", "ray"]) == 0
    ref = tree_hashes(tiled_local)
    assert "coords/CMU-1-Small-Region.h5" in ref and "status/CMU-1-Small-Region.json" in ref
    got = tree_hashes(out)
    # summary.csv holds the slide's path and its seconds; every other file is byte-identical
    summary = {k for k in ref if k == "summary.csv"}
    assert {k: v for k, v in got.items() if k not in summary} == {k: v for k, v in ref.items() if k not in summary}
    rows = [(tiled_local / "summary.csv").read_text().splitlines(), (out / "summary.csv").read_text().splitlines()]
    assert [r.split(",")[:4] for r in rows[0]] == [r.split(",")[:4] for r in rows[1]]


def test_extract_ray_equals_local(tmp_path: Path, tiled_local: Path, ray_address: str) -> None:
    args = ["pathology", "extract", "--encoder", "resnet18", "--image-size", "32", "--tiles", str(tiled_local),
            "--device", "cpu", "--workers", "0", "--batch-size", "32"]
    assert main([*args, "-o", str(tmp_path / "local")]) == 0
    assert main([*args, "-o", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    ref = tree_hashes(tmp_path / "local")
    assert list(ref) == ["CMU-1-Small-Region.h5"]
    assert tree_hashes(tmp_path / "ray") == ref


def test_index_ray_equals_local(tmp_path: Path, curated_local: Path, ray_address: str) -> None:
    a, b = tmp_path / "local", tmp_path / "ray"
    assert main(["code", "index", str(curated_local), "-o", str(a)]) == 0
    assert main(["code", "index", str(curated_local), "-o", str(b), "--executor", "ray", "--workers", "2"]) == 0
    # tantivy names its segments with random ids: the filters and the shard records are compared byte for
    # byte, the full-text index by what it answers
    ha = {k: v for k, v in tree_hashes(a).items() if "/fulltext/" not in k}
    assert any(k.endswith("membership.bloom") for k in ha) and tree_hashes(b).keys() >= ha.keys()
    assert {k: v for k, v in tree_hashes(b).items() if k in ha} == ha
    from domainfm.code.attribution.trace import Tracer

    q = "    def _split(self, text):\n        \"\"\"_split(text : string) -> [string]"  # textwrap.py
    hits = [Tracer(x).trace(q, top_k=3, with_content=False)["hits"] for x in (a, b)]
    assert hits[0] == hits[1] != []

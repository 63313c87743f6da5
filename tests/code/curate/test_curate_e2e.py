"""End to end over a small real corpus: CLI in-process, outputs, accounting, kill -9 + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from domainfm.cli import main

FAST = ["--no-humaneval", "--mbpp", "none", "--files-per-shard", "6"]  # same as conftest.FAST


def _tables(out: Path) -> dict:
    """Everything a run produces, order-normalised, for equality checks."""
    def rows(paths, key):
        t = [r for p in sorted(paths) for r in pq.read_table(p).to_pylist()]
        return sorted(t, key=lambda r: json.dumps(r, sort_keys=True, default=str)) if key else t

    stats = json.loads((out / "stats.json").read_text())
    return {"data": rows((out / "data").glob("*.parquet"), False),
            "removed": rows((out / "removed").glob("*.parquet"), True),
            "clusters": rows([out / "dedup_clusters.parquet"], True),
            "pii": rows([out / "pii.parquet"], True), "stats": stats}


def test_cli_end_to_end(tmp_path, corpus, data_dir, capsys):
    out = tmp_path / "out"
    optout = tmp_path / "optout.txt"
    optout.write_text("nobody\n")
    rc = main(["code", "curate", str(corpus), "-o", str(out), "--max-file-size", "100000", "--opt-out", str(optout),
               "--mbpp", str(data_dir / "code" / "mbpp" / "mbpp.jsonl"), "--files-per-shard", "6"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "near_dedup" in printed and "decontaminate" in printed  # the funnel table
    stats = json.loads((out / "stats.json").read_text())
    assert stats["files_in"] == stats["files_out"] + sum(stats["dropped"].values())
    assert stats["files_in"] == sum(1 for p in corpus.rglob("*") if p.is_file())
    d = stats["dropped"]
    assert d["exact_duplicate"] == 4 and d["near_duplicate"] == 1 and d["binary"] == 1 and d["too_large"] == 1
    assert d["non_permissive"] == 1  # dave's lib.py is under the GPL COPYING
    assert d["unknown_language"] == 3  # LICENSE, LICENSE, COPYING (no extension)
    data = pq.read_table(out / "data").to_pylist()
    assert {"swhid", "repo_name", "path", "language", "license_type", "licenses", "content", "size"} <= set(data[0])
    assert all(r["license_type"] in ("permissive", "no_license") for r in data)
    alice = {r["path"]: r for r in data if r["repo_name"] == "alice/textutils"}
    assert set(alice) == {"textwrap.py", "shlex.py", "fnmatch.py", "glob.py"}
    assert "PSF-2.0" in alice["textwrap.py"]["licenses"] and alice["textwrap.py"]["language"] == "Python"
    removed = pq.read_table(out / "removed").to_pylist()
    assert len(removed) == sum(d.values()) and all(r["reason"] for r in removed)
    clusters = pq.read_table(out / "dedup_clusters.parquet").to_pylist()
    near = [c for c in clusters if c["kind"] == "near"]
    assert len(near) == 1 and near[0]["kept_path"] == "textwrap.py" and near[0]["dup_repo"] == "carol/near"
    assert near[0]["est_jaccard"] > 0.7
    exact = [c for c in clusters if c["kind"] == "exact"]
    assert all(c["kept_repo"] == "alice/textutils" and c["dup_repo"] == "bob/copy" for c in exact)
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == stats["files_out"]


def test_pii_table_and_redacted_output(tmp_path, corpus):
    out = tmp_path / "out"
    assert main(["code", "curate", str(corpus), "-o", str(out), *FAST]) == 0
    data = {r["path"]: r for r in pq.read_table(out / "data").to_pylist()}
    text = data["contact.py"]["content"]
    assert "carol.smith@example.org" not in text and "<EMAIL>" in text and "<PASSWORD>" in text
    assert "52.14.160.21" not in text
    p = pq.read_table(out / "pii.parquet").to_pylist()
    assert {r["type"] for r in p} >= {"email", "ip_address", "password"}
    assert not any("hunter2" in json.dumps(r) or "carol.smith" in json.dumps(r) for r in p)


def test_missing_source_is_one_line_error(tmp_path, capsys):
    rc = main(["code", "curate", str(tmp_path / "does-not-exist"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "source not found" in err and len(err.splitlines()) == 1
    assert main(["code", "curate", "-o", str(tmp_path / "o")]) != 0


def test_bad_inputs_are_counted_and_run_goes_on(tmp_path, corpus):
    import tarfile

    os.symlink("loop2", corpus / "alice__textutils" / "loop1")
    os.symlink("loop1", corpus / "alice__textutils" / "loop2")
    (corpus / "alice__textutils" / "cp1252.py").write_bytes("s = 'naïve café – “quoted”'\n".encode("cp1252") * 3)
    (corpus / "emptyrepo").mkdir()
    (corpus / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated gzip")
    good = tmp_path / "good.tar.gz"
    (tmp_path / "hello.py").write_text("def greet(name):\n    return f'hello {name}, from an archive'\n")
    with tarfile.open(good, "w:gz") as tf:
        tf.add(tmp_path / "hello.py", arcname="arch/hello.py")
    out = tmp_path / "out"
    assert main(["code", "curate", str(corpus), str(good), "-o", str(out), *FAST]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dropped"]["symlink_loop"] == 2 and stats["dropped"]["broken_archive"] == 1
    assert "emptyrepo" in stats["empty_repos"]
    data = {(r["repo_name"], r["path"]): r for r in pq.read_table(out / "data").to_pylist()}
    assert data[("alice/textutils", "cp1252.py")]["encoding"] not in ("utf-8", None)
    assert ("good", "hello.py") in data
    assert stats["files_in"] == stats["files_out"] + sum(stats["dropped"].values())


def _run_subprocess(args: list[str], kill_at: str | None) -> int:
    env = {**os.environ, "DOMAINFM_PROGRESS": "0"}
    if kill_at:
        env["DOMAINFM_CURATE_KILL_AT"] = kill_at
    code = "import sys; from domainfm.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, timeout=300).returncode


@pytest.mark.parametrize("kill_points", [["s1-1", "s3-0"], ["s2", "final"]])
def test_kill_9_and_rerun_gives_identical_output(tmp_path, reference_run, kill_points):
    src, ref = reference_run
    out = tmp_path / "killed"
    args = ["code", "curate", str(src), "-o", str(out), *FAST]
    for point in kill_points:  # killed, resumed and killed again further on
        assert _run_subprocess(args, point) == -signal.SIGKILL
        assert not (out / "stats.json").exists()
    assert main(args) == 0  # the same command resumes
    a, b = _tables(out), _tables(ref)
    a["stats"].pop("config")
    b["stats"].pop("config")
    assert a == b


def test_external_kill_and_workers_do_not_change_output(tmp_path, reference_run):
    src, ref = reference_run
    out = tmp_path / "w2"
    args = ["code", "curate", str(src), "-o", str(out), "--workers", "2", *FAST]
    code = "import sys; from domainfm.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], start_new_session=True,
                            env={**os.environ, "DOMAINFM_PROGRESS": "0"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / ".work" / "s1" / "completions").glob("*.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process tree, mid-run
    proc.wait()
    assert main(args) == 0
    a, b = _tables(out), _tables(ref)
    a["stats"].pop("config")
    b["stats"].pop("config")
    assert a == b

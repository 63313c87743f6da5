"""The attribution index and `code trace`: the guarantees of issue 14, on real files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from domainfm.code.attribution.fulltext import _analyzer, code_terms
from domainfm.code.attribution.index import describe, load_shards
from domainfm.code.attribution.membership import membership
from domainfm.code.attribution.ngrams import char_offsets, ngram_hash_reference, ngram_hashes
from domainfm.code.attribution.trace import Tracer, trace_samples

from .conftest import HELD_OUT, STDLIB, corpus_texts


def test_ngram_hashes_equal_the_plain_python_reference() -> None:
    text = "déjà vu — def f(x):\n\treturn x ** 2  # ünïcödé\n" * 3
    data = text.encode("utf-8")
    for width, stride in [(8, 1), (13, 1), (8, 3), (50, 7)]:
        got = [int(h) for h in ngram_hashes(data, width, stride)]
        want = [ngram_hash_reference(data[i:i + width]) for i in range(0, len(data) - width + 1, stride)]
        assert got == want
    assert len(ngram_hashes(b"short", 8)) == 0
    # distinct windows, distinct keys (on a real file), and runs of NUL of different lengths differ
    real = (STDLIB / "textwrap.py").read_bytes()
    keys = ngram_hashes(real, 50)
    windows = {real[i:i + 50] for i in range(len(real) - 49)}
    assert len(set(keys.tolist())) == len(windows)
    assert ngram_hash_reference(b"\x00" * 8) != ngram_hash_reference(b"\x00" * 9)


def test_char_offsets_map_bytes_to_characters() -> None:
    text = "aé€😀b"
    co = char_offsets(text)
    assert len(co) == len(text.encode()) + 1
    for i, ch in enumerate(text):
        start = len(text[:i].encode())
        assert co[start] == i and co[start + len(ch.encode()) - 1] == i
    assert co[-1] == len(text)


def test_tantivy_analyzer_and_python_terms_agree() -> None:
    analyzer = _analyzer()
    for name in ("textwrap.py", "ipaddress.py"):
        text = (STDLIB / name).read_text()
        assert analyzer.analyze(text) == code_terms(text)
    assert code_terms("computeAverage compute_average COMPUTE_AVERAGE") == ["compute", "average"] * 3


def test_every_exact_substring_of_the_corpus_is_found(curated: Path, index: Path) -> None:
    tracer = Tracer(index)
    rng = np.random.default_rng(0)
    files = corpus_texts(curated)
    assert files
    for _ in range(300):
        content = files[rng.integers(len(files))]["content"]
        data = content.encode("utf-8")
        length = int(rng.choice([50, 51, 64, 200, 1000]))
        if len(data) < length:
            continue
        start = int(rng.integers(0, len(data) - length + 1))
        piece = data[start:start + length].decode("utf-8", errors="ignore")  # cut at character boundaries
        if len(piece.encode("utf-8")) < 50 or not piece.strip():
            continue
        mem = membership(piece, [s.bloom for s in tracer.shards], tracer.width, tracer.stride).to_dict()
        assert mem["n_hits"] == mem["n_ngrams"], piece
        assert mem["longest_span_chars"] == len(piece)
        assert (mem["longest_span_start"], mem["longest_span_end"]) == (0, len(piece))


def test_measured_false_positive_rate_is_within_the_recorded_rate(curated: Path, index: Path) -> None:
    """Held-out real files: n-grams not in the corpus (by exact 64-bit key) that the filters call present."""
    manifest, shards = load_shards(index)
    width = manifest["width"]
    truth = np.unique(np.concatenate([ngram_hashes(r["content"].encode(), width) for r in corpus_texts(curated)]))
    lookups = positives = 0
    for name in HELD_OUT:
        keys = np.unique(ngram_hashes((STDLIB / name).read_bytes(), width))
        absent = keys[~np.isin(keys, truth)]
        hit = np.zeros(len(absent), dtype=bool)
        for shard in shards:
            hit |= shard.bloom.contains(absent)
        lookups += len(absent)
        positives += int(hit.sum())
    recorded = describe(index)["fpr_index"]
    assert lookups > 100_000
    assert positives / lookups <= recorded, (positives, lookups, recorded)


def _rename_and_reindent(text: str) -> str:
    """snake_case identifiers -> camelCase, a few names replaced outright, 4-space indents -> 2."""
    def camel(m: re.Match) -> str:
        head, *rest = m.group(0).split("_")
        return head + "".join(p.capitalize() for p in rest)

    text = re.sub(r"\b[a-z]+(?:_[a-z0-9]+)+\b", camel, text)
    for old, new in (("self", "this"), ("text", "txt"), ("width", "w")):
        text = re.sub(rf"\b{old}\b", new, text)
    return re.sub(r"^((?:    )+)", lambda m: "  " * (len(m.group(1)) // 4), text, flags=re.M)


def test_a_renamed_and_reindented_training_file_is_in_the_top_5(curated: Path, index: Path) -> None:
    tracer = Tracer(index)
    files = {r["path"]: r for r in corpus_texts(curated)}
    for path in ("textwrap.py", "heapq.py", "netrc.py"):
        original = files[path]["content"]
        edited = _rename_and_reindent(original)
        assert edited != original
        part = "\n".join(edited.splitlines()[40:120])  # a 80-line excerpt, as a user would paste
        hits = tracer.trace(part, top_k=5)["hits"]
        assert files[path]["swhid"] in [h["swhid"] for h in hits], [h["path"] for h in hits]
        top = next(h for h in hits if h["swhid"] == files[path]["swhid"])
        assert top["lines"], "the matching lines are reported"
        content = files[path]["content"]
        for m in top["lines"]:
            assert content.splitlines()[m["line"] - 1] == content[m["start"]:m["end"]]


def test_trace_json_gives_provenance_and_line_offsets(curated: Path, index: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from domainfm.cli import main

    row = next(r for r in corpus_texts(curated) if r["path"] == "fractions.py")
    snippet = "\n".join(row["content"].splitlines()[100:115])
    assert main(["code", "trace", str(index), snippet, "--json", "--top-k", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    hit = result["hits"][0]
    assert hit["swhid"] == row["swhid"] and hit["path"] == "fractions.py" and hit["repo_name"] == "bob/data"
    assert hit["license_type"] == "permissive" and hit["licenses"]
    assert result["membership"]["fraction"] == 1.0
    exact = [m for m in hit["lines"] if m["kind"] == "exact"]
    lines = row["content"].splitlines()
    wanted = {101 + i for i in range(15) if len(set(code_terms(lines[100 + i]))) >= 3 and len(lines[100 + i].strip()) >= 8}
    assert len(wanted) >= 8 and {m["line"] for m in exact} >= wanted


def test_samples_summary_counts_copied_generations(curated: Path, index: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from domainfm.cli import main

    copied = "\n".join(corpus_texts(curated)[0]["content"].splitlines()[10:30])
    fresh = "def quux_frobnicate(zz):\n    return [zz * 7 for _ in range(3)] + ['not in any training file']\n"
    samples = tmp_path / "samples.jsonl"
    samples.write_text("\n".join(json.dumps(r) for r in [
        {"task_id": "T/0", "completion": copied},
        {"prompt": "x", "completions": [fresh, ""]},
    ]) + "\n")
    assert main(["code", "trace", str(index), "--samples", str(samples), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"] == {"samples": 3, "min_span_chars": 50, "with_training_span": 1, "untraceable": 1}
    assert [s["copied"] for s in out["samples"]] == [True, False, False]
    tracer = Tracer(index)
    rows, summary = trace_samples(tracer, [{"completion": copied}], min_span=len(copied) + 1)
    assert summary["with_training_span"] == 0  # the threshold is honoured


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    from domainfm.cli import main

    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_gets_a_clear_answer(curated: Path, index: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from domainfm.cli import main

    # an index folder from another corpus
    other = tmp_path / "other"
    shutil.copytree(curated, other)
    assert "indexes another corpus" in _one_line_error(capsys, ["code", "index", str(other), "-o", str(index)])
    # a newer index format
    newer = tmp_path / "newer"
    shutil.copytree(index, newer)
    manifest = json.loads((newer / "index.json").read_text())
    (newer / "index.json").write_text(json.dumps({**manifest, "version": 99}))
    assert "format version 99" in _one_line_error(capsys, ["code", "trace", str(newer), "x = 1"])
    assert "not an index folder" in _one_line_error(capsys, ["code", "trace", str(curated), "x = 1"])
    assert "not a curated corpus" in _one_line_error(capsys, ["code", "index", str(tmp_path), "-o",
                                                              str(tmp_path / "i")])
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)))
    assert "not UTF-8" in _one_line_error(capsys, ["code", "trace", str(index), "--file", str(binary)])
    # empty, NUL-bearing and shorter-than-width snippets: an answer, not a crash
    for snippet, expect in [("", "empty"), ("  \n", "empty"), ("a\x00b" * 30, "binary"),
                            ("x = 1", "shorter than the n-gram width")]:
        assert main(["code", "trace", str(index), snippet]) == 0
        assert expect in capsys.readouterr().out


def _run_index(corpus: Path, out: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOMAINFM_PROGRESS": "0"}
    env.pop("DOMAINFM_INDEX_KILL_AT", None)
    if kill_at:
        env["DOMAINFM_INDEX_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "domainfm", "code", "index", str(corpus), "-o", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)


def _answers(index: Path, queries: list[str]) -> list:
    tracer = Tracer(index)
    return [(r["membership"], [(h["swhid"], h["score"]) for h in r["hits"]])
            for r in (tracer.trace(q, top_k=5) for q in queries)]


@pytest.mark.slow
def test_kill_9_resume_and_incremental_shards(curated: Path, index: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(curated, corpus)
    out = tmp_path / "index"
    for point in ("shard-1-batch", "shard-2-before-rename"):
        proc = _run_index(corpus, out, kill_at=point)
        assert proc.returncode == -9, proc.stderr
    assert _run_index(corpus, out).returncode == 0
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert not [s for s in shards if s.startswith(".")], "no half-built shard is left behind"
    for marker in (index / "shards").glob("*/shard.json"):  # same filters as the uninterrupted build
        twin = out / "shards" / marker.parent.name
        assert json.loads((twin / "shard.json").read_text()) == json.loads(marker.read_text())
        assert (twin / "membership.bloom").read_bytes() == (marker.parent / "membership.bloom").read_bytes()
    texts = [r["content"] for r in corpus_texts(curated)]
    queries = [t[500:900] for t in texts[:6]] + ["def unrelated_thing(a, b):\n    return a ** b - 42\n" * 2]
    assert _answers(out, queries) == _answers(index, queries)
    # incremental: a new corpus shard is added, the others are reused
    first = sorted((corpus / "data").glob("*.parquet"))[0]
    shutil.copy(first, corpus / "data" / "part-99999.parquet")
    proc = _run_index(corpus, out)
    assert proc.returncode == 0, proc.stderr
    assert f"1 new, {len(shards)} already indexed" in proc.stdout
    assert (out / "shards" / "part-99999" / "shard.json").exists()


def test_blocked_bloom_numba_kernels_equal_the_numpy_twin() -> None:
    from domainfm.code.attribution.bloom import BlockedBloom, expected_fpr, plan

    keys = ngram_hashes((STDLIB / "difflib.py").read_bytes(), 50)
    p = plan(len(keys), 1e-3)
    fast, slow = BlockedBloom(p), BlockedBloom(p, use_numba=False)
    fast.add(keys)
    slow.add(keys)
    assert np.array_equal(fast.table, slow.table) and fast.table.any()
    probe = ngram_hashes((STDLIB / "argparse.py").read_bytes(), 50)
    assert np.array_equal(fast.contains(probe), slow.contains(probe))
    assert fast.contains(keys).all()
    # the sizing meets the target with the blocked filter's own rate (not the textbook formula's)
    assert p.fpr <= 1e-3 and expected_fpr(p.n_keys, p.n_blocks, p.k) == p.fpr
    textbook_bits = -np.log(1e-3) / np.log(2) ** 2 * len(keys)
    assert p.bytes * 8 > textbook_bits  # blocking costs bits; a filter of the textbook size would miss the target
    assert expected_fpr(len(keys), int(np.ceil(textbook_bits / 512)), p.k) > 1e-3

"""Data mixtures (`code pack --mixture`): StarCoder2's published composition as data, seeded up/downsampling
whose proportions follow the weights, identical shards from the same seed, tokens counted per source."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from domainfm.cli import main
from domainfm.code.data.mixture import MIXTURES, Mixture, copies, load_mixture, source_of
from domainfm.code.data.pack import pack_corpus
from domainfm.core.errors import UserError
from domainfm.core.io import read_parquet_rows

# StarCoder2 (Lozhkov et al. 2024, arXiv:2402.19173), Table 4: unique tokens (B), used by 3B / 7B / 15B
TABLE4 = {
    "the-stack-v2-train-smol": (525.5, True, True, False),
    "the-stack-v2-train-full": (775.48, False, False, True),
    "Pull requests": (19.54, True, True, True),
    "Issues": (11.06, True, True, True),
    "Jupyter structured": (14.74, True, True, True),
    "Jupyter scripts": (16.29, True, True, True),
    "Kaggle scripts": (1.68, True, True, True),
    "Documentation": (1.6, True, True, True),
    "OpenWebMath": (14.42, False, True, True),
    "Wikipedia": (6.12, False, True, True),
    "StackOverflow": (10.26, True, True, True),
    "Arxiv": (30.26, False, True, True),
    "LHQ": (5.78, True, True, True),
    "Intermediate Repr.": (6.0, True, True, True),
}
UNIQUE_TOKENS_B = {"3b": 622.09, "7b": 658.58, "15b": 913.23}
# section 4: Java 479.68 GB and JavaScript 277.25 GB were both downsampled to 200 GB
JAVA_W, JS_W = 200 / 479.68, 200 / 277.25
SMOL = ["C", "C#", "C++", "Go", "Java", "JavaScript", "Kotlin", "Lua", "PHP", "Python", "R", "Ruby", "Rust", "SQL",
        "Shell", "Swift", "TypeScript"]


@pytest.mark.parametrize("size", ["3b", "7b", "15b"])
def test_starcoder2_presets_are_the_published_composition(size: str) -> None:
    mix = MIXTURES.get(f"starcoder2-{size}")()
    col = {"3b": 1, "7b": 2, "15b": 3}[size]
    assert mix.published["table4_tokens_b"] == {k: v[0] for k, v in TABLE4.items()}
    assert mix.published["included"] == {k: v[col] for k, v in TABLE4.items()}
    assert mix.published["unique_tokens_b"] == UNIQUE_TOKENS_B[size]
    assert "2402.19173" in mix.citation
    for row, src in {"Pull requests": "pull_request", "Issues": "issue", "Jupyter structured": "notebook_structured",
                     "Jupyter scripts": "notebook_script"}.items():
        assert mix.weight(src) == float(TABLE4[row][col])
    assert mix.weight("lang:Java") == pytest.approx(JAVA_W) and mix.weight("lang:JavaScript") == pytest.approx(JS_W)
    for lang in set(SMOL) - {"Java", "JavaScript"}:
        assert mix.weight(f"lang:{lang}") == 1.0
    assert mix.weight("lang:Markdown") == mix.weight("lang:reStructuredText") == 1.0  # documentation languages
    # the 3B and 7B train on the 17 languages of the smol variant only; the 15B on all 619
    assert mix.weight("lang:Haskell") == (1.0 if size == "15b" else 0.0)


def test_copies_follow_the_weight_and_the_seed() -> None:
    keys = [f"swh:1:cnt:{i:040x}" for i in range(4000)]
    for w in (0.0, 0.25, 1.0, 2.3, 3.0):
        c = np.array([copies(w, 7, k) for k in keys])
        assert set(np.unique(c)) <= {math.floor(w), math.floor(w) + 1}
        frac = w - math.floor(w)
        sd = math.sqrt(frac * (1 - frac) / len(keys))
        assert abs(c.mean() - w) <= 4 * sd + 1e-12, (w, c.mean())
    a = [copies(0.5, 1, k) for k in keys]
    assert a == [copies(0.5, 1, k) for k in keys]  # a pure function of (seed, row)
    assert a != [copies(0.5, 2, k) for k in keys]  # another seed, another sample


def test_bad_mixtures_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown source"):
        Mixture("m", {"python": 1.0})
    with pytest.raises(UserError, match=">= 0"):
        Mixture("m", {"issue": -1})
    with pytest.raises(UserError, match="neither a preset"):
        load_mixture("no-such-mixture")
    (tmp_path / "m.yaml").write_text("weights: {lang:Python: 2, issue: 0.5}\n")
    m = load_mixture(tmp_path / "m.yaml")
    assert m.name == "m" and m.weight("lang:Python") == 2.0 and m.weight("issue") == 0.5
    assert m.weight("lang:Go") == 1.0  # default


# ---------------------------------------------------------------- packing with a mixture
def _doc_rows() -> list[dict]:
    """Real Markdown files (this repository's docs) as a documentation source, and GitHub-issue records
    written in StarCoder2's issue format from their paragraphs."""
    docs = sorted((Path(__file__).resolve().parents[3] / "docs").glob("*.md"))[:6]
    rows = []
    for i, d in enumerate(docs):
        text = d.read_text(encoding="utf-8")[:4000]
        rows.append({"swhid": f"swh:1:cnt:{hashlib.sha1(text.encode()).hexdigest()}", "repo_name": f"domainfm/docs{i % 3}",
                     "path": f"docs/{d.name}", "language": "Markdown", "license_type": "permissive",
                     "licenses": ["MIT"], "content": text, "size": len(text.encode()), "kind": "file"})
        paras = [p for p in text.split("\n\n") if p.strip()][:3]
        issue = "<issue_start>Title: " + d.stem + "\nusername_0: " + paras[0] + "".join(
            f"<issue_comment>username_{k}: {p}" for k, p in enumerate(paras[1:], 1))
        rows.append({"swhid": f"swh:1:cnt:{hashlib.sha1(issue.encode()).hexdigest()}", "repo_name": f"domainfm/i{i}",
                     "path": f".github/issues/{i}.json", "language": None, "license_type": "permissive",
                     "licenses": ["MIT"], "content": issue, "size": len(issue.encode()), "kind": "issue"})
    return rows


@pytest.fixture(scope="module")
def mix_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from domainfm.code.data.testing import stdlib_rows, write_corpus

    rows = [dict(r, kind="file") for r in stdlib_rows(n_repos=8, files_per_repo=4, max_file_bytes=6000)]
    return write_corpus(tmp_path_factory.mktemp("mixcorpus"), rows + _doc_rows(), n_shards=2, row_group_size=5)


@pytest.fixture(scope="module")
def mix_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("mix") / "mix.yaml"
    p.write_text("name: test-mix\nweights:\n  lang:Python: 2.5\n  documentation: 0.5\n  issue: 0\n")
    return p


def _digest(packed: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(packed.rglob("*")):
        if p.is_file() and p.relative_to(packed).parts[0] != "_work":
            h.update(str(p.relative_to(packed)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _pack(corpus: Path, tok: Path, out: Path, seed: int, mixture: object) -> dict:
    return pack_corpus(corpus, tok, out, seq_len=128, seed=seed, val_fraction=0.2, shard_mb=0.02, fim_rate=0.5,
                       mixture=mixture)


def test_mixture_pack_is_reproducible_and_follows_the_weights(mix_corpus: Path, mix_yaml: Path, pack_tokenizer: Path,
                                                              tmp_path: Path) -> None:
    a = _pack(mix_corpus, pack_tokenizer, tmp_path / "a", 11, mix_yaml)
    _pack(mix_corpus, pack_tokenizer, tmp_path / "b", 11, mix_yaml)
    _pack(mix_corpus, pack_tokenizer, tmp_path / "c", 12, mix_yaml)
    nat = _pack(mix_corpus, pack_tokenizer, tmp_path / "n", 11, None)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")  # same seed: the same shards, byte for byte
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")  # another seed: another sample
    assert "mixture" not in nat

    # the run records its mixture (weights, seed) and accounts for every corpus row
    mix = a["mixture"]
    assert mix["name"] == "test-mix" and mix["seed"] == 11
    assert mix["weights"] == {"documentation": 0.5, "issue": 0.0, "lang:Python": 2.5}
    rows = list(read_parquet_rows(sorted((mix_corpus / "data").glob("*.parquet"))))
    src = mix["sources"]
    assert set(src) == {"lang:Python", "lang:Markdown", "issue"}
    assert sum(s["rows"] for s in src.values()) == len(rows) == a["corpus_rows"]
    for s in src.values():
        assert s["train_rows_in"] + s["val_rows_in"] == s["rows"]
        assert s["val_rows_out"] <= s["val_rows_in"]  # no duplicates in the validation split

    # the oracle: the copies formula applied to each train row of the corpus
    train_repos = set(a["splits"]["train"]["repos"])
    expect = dict.fromkeys(src, 0)
    for r in rows:
        if r["repo_name"] in train_repos:
            s = source_of(r["kind"], r["language"])
            expect[s] += copies({"lang:Python": 2.5, "lang:Markdown": 0.5, "issue": 0.0}[s], 11,
                                                  r["swhid"])
    assert {k: v["train_rows_out"] for k, v in src.items()} == expect
    n_py = src["lang:Python"]["train_rows_in"]
    assert 2 * n_py <= expect["lang:Python"] <= 3 * n_py
    assert src["issue"]["rows_dropped"] == src["issue"]["rows"] and src["issue"]["train_rows_out"] == 0

    # realised tokens per source: none from the dropped source, all stream tokens accounted for, and the
    # upsampled source grows with its copies (a copy's tokens differ from the original only by its metadata)
    for split in ("train", "val"):
        by = a["splits"][split]["by_source"]
        assert "issue" not in by
        assert sum(v["tokens"] for v in by.values()) == a["splits"][split]["n_stream_tokens"]
    by, by_nat = a["splits"]["train"]["by_source"], nat["splits"]["train"]["by_source"]
    assert by["lang:Python"]["files"] == expect["lang:Python"]
    ratio = by["lang:Python"]["tokens"] / by_nat["lang:Python"]["tokens"]
    assert ratio == pytest.approx(expect["lang:Python"] / n_py, rel=0.05)
    assert by_nat["issue"]["tokens"] > 0


def test_pack_cli_takes_a_preset_mixture(mix_corpus: Path, pack_tokenizer: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["code", "pack", str(mix_corpus), "--tokenizer", str(pack_tokenizer), "--seq-len", "128",
            "--val-fraction", "0.2"]
    assert main([*args, "-o", str(tmp_path / "p"), "--mixture", "starcoder2-3b"]) == 0
    out = capsys.readouterr().out
    assert "mixture starcoder2-3b" in out and "lang:Python" in out
    assert main([*args, "-o", str(tmp_path / "q"), "--mixture", "starcoder2-1b"]) == 2
    err = capsys.readouterr().err.strip()
    assert "neither a preset" in err and len(err.splitlines()) == 1

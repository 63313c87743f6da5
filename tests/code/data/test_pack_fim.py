"""FIM and repository samples at the text level: layouts, round trips, rates, determinism."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from domainfm.code.data.fim import (
    SampleStats,
    Special,
    apply_fim,
    fim_pieces,
    parse_sample,
    render,
    repo_sample,
    seeded_rng,
    undo_fim,
)


def test_psm_and_spm_layouts_are_starcoder2s() -> None:
    assert render(fim_pieces("P", "M", "S", spm=False)) == "<fim_prefix>P<fim_suffix>S<fim_middle>M"
    assert render(fim_pieces("P", "M", "S", spm=True)) == "<fim_prefix><fim_suffix>S<fim_middle>PM"
    assert fim_pieces("P", "M", "S", spm=True)[-2:] == ["P", "M"]  # SPM: tokenised apart, as at inference


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.integers(0, 2**32), st.booleans())
def test_removing_fim_tokens_and_reordering_gives_back_the_file(code: str, seed: int, spm: bool) -> None:
    rng = random.Random(seed)
    pieces, mode = apply_fim(code, rng, fim_rate=1.0, spm_rate=1.0 if spm else 0.0)
    assert mode == ("spm" if spm else "psm")
    assert undo_fim(pieces) == code
    # and by hand, from the rendered string: drop the tokens, reorder
    text = render(pieces)
    if spm:
        body = text.removeprefix("<fim_prefix><fim_suffix>")
        suffix, prefix_middle = body.split("<fim_middle>")
        assert prefix_middle + suffix == code
    else:
        prefix, rest = text.removeprefix("<fim_prefix>").split("<fim_suffix>")
        suffix, middle = rest.split("<fim_middle>")
        assert prefix + middle + suffix == code


def test_split_points_are_characters_not_bytes() -> None:
    code = "αβγ😀δε"
    seen = set()
    for seed in range(200):
        pieces, _ = apply_fim(code, random.Random(seed), fim_rate=1.0, spm_rate=0.0)
        prefix, middle, suffix = pieces[1], pieces[5], pieces[3]
        assert prefix + middle + suffix == code  # every part is whole characters
        seen.add(len(prefix))
    assert seen == set(range(len(code) + 1))  # every character boundary, both ends included


def test_rates() -> None:
    rng = random.Random(0)
    modes = [apply_fim("some code here", rng, 0.5, 0.5)[1] for _ in range(4000)]
    assert 0.45 < modes.count("")/4000 < 0.55
    assert 0.45 < modes.count("psm") / (4000 - modes.count("")) < 0.55
    assert apply_fim("x", rng, 0.0, 0.5)[1] == ""
    assert all(apply_fim("x", rng, 1.0, 0.5)[1] for _ in range(50))


FILES = [("a.py", "import os\n"), ("b/c.py", "def f():\n    return 1\n"), ("d.txt", ""), ("e.py", "x = 'é'\n")]


def test_repo_sample_layout_with_and_without_metadata() -> None:
    meta = render(repo_sample("org/repo", FILES[:1], seed=0, fim_rate=0.0, meta_rate=1.0))
    assert meta == "<repo_name>org/repo<file_sep>a.py\nimport os\n<|endoftext|>"
    plain = render(repo_sample("org/repo", FILES[:2], seed=0, fim_rate=0.0, meta_rate=0.0))
    assert plain.startswith("<file_sep>") and plain.endswith("<|endoftext|>")
    assert plain.count("<file_sep>") == 2 and "a.py" not in plain and "<repo_name>" not in plain


def test_repo_sample_round_trips_and_is_seeded() -> None:
    stats = SampleStats()
    orders = set()
    for seed in range(40):
        pieces = repo_sample("org/repo", FILES, seed=seed, fim_rate=0.5, stats=stats)
        assert repo_sample("org/repo", FILES[::-1], seed=seed) == repo_sample("org/repo", FILES, seed=seed)
        repo, files = parse_sample(pieces)
        if repo is None:
            assert sorted(code for _, code in files) == sorted(code for _, code in FILES)
        else:
            assert repo == "org/repo" and sorted(files) == sorted(FILES)
        orders.add(tuple(code for _, code in files))
    assert len(orders) > 10  # files come in a seeded random order
    assert stats.files == 160 and 40 < stats.psm + stats.spm < 120 and 5 < stats.with_meta < 35


def test_seeded_rng_depends_only_on_seed_and_key() -> None:
    assert seeded_rng(1, "r").random() == seeded_rng(1, "r").random()
    assert seeded_rng(1, "r").random() != seeded_rng(2, "r").random()
    assert Special("<fim_pad>") == Special("<fim_pad>")

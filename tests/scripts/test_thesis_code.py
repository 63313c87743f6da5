"""`benchmarks/thesis_code.py --smoke`: raw vs curated corpora from the same repositories, same compute,
end to end on toy sizes (real repositories from this venv, real HumanEval-infilling), then a resume."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("thesis_code", ROOT / "benchmarks" / "thesis_code.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_wilson_interval_matches_the_published_formula() -> None:
    tc = _module()
    # Wilson (1927) score interval, z = 1.96: 0/10 -> [0, z^2/(n+z^2)] = [0, 0.2775]; 5/10 -> [0.2366, 0.7634]
    lo, hi = tc.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = tc.wilson(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))


@pytest.mark.slow
def test_smoke_end_to_end_then_resume(tmp_path: Path, data_dir: Path) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from domainfm.code.data.pack import load_tokenizer
    from domainfm.core.io import read_parquet_rows

    tc = _module()
    out = tmp_path / "tc"
    assert tc.main(["-o", str(out), "--smoke"]) == 0
    s = json.loads((out / "summary.json").read_text())
    sz = tc.SIZES["smoke"]
    raw, cur = s["arms"]["raw"], s["arms"]["curated"]

    # the same repositories feed both corpora; the raw one keeps more (no filter, no dedup)
    raw_stats = json.loads((out / "raw" / "stats.json").read_text())
    cur_stats = json.loads((out / "curated" / "stats.json").read_text())
    assert raw_stats["files_in"] == cur_stats["files_in"] > 0
    assert raw["corpus"]["files"] > cur["corpus"]["files"] and raw["corpus"]["bytes"] > cur["corpus"]["bytes"]
    # raw drops only what cannot be text (reader errors, binary) and benchmark contamination (as curated does)
    assert set(raw_stats["dropped"]) <= {"binary", "undecodable", "too_large", "unreadable", "special_file",
                                         "broken_symlink", "symlink_loop", "symlink_outside_repo", "symlink_dir",
                                         "benchmark_contamination"}
    assert cur_stats["dropped"], "the smoke repositories hold duplicates the full pipeline removes"

    # same compute: the same steps x tokens per step
    assert raw["tokens_seen"] == cur["tokens_seen"] == sz["steps"] * sz["batch"] * sz["seq_len"]
    assert raw["steps"] == cur["steps"] == sz["steps"]

    # held-out repositories are in neither training set, and no held-out file is a training file
    repos = json.loads((out / "repos.json").read_text())
    held_names = {r["name"] for r in repos["heldout"]}
    assert held_names and not held_names & {r["name"] for r in repos["train"]}
    held = list(read_parquet_rows(sorted((out / "heldout" / "data").glob("*.parquet"))))
    assert held and {r["repo_name"] for r in held} <= held_names and {r["language"] for r in held} == {"Python"}
    train_ids = {r["swhid"] for r in read_parquet_rows(sorted((out / "raw" / "data").glob("*.parquet")),
                                                        columns=["swhid"])}
    assert not {r["swhid"] for r in held} & train_ids

    for arm in (raw, cur):
        for k in ("heldout_loss", "heldout_bits_per_byte", "final_train_loss"):
            assert math.isfinite(arm[k]) and 0 < arm[k] < 2 * math.log(sz["vocab"]), (k, arm[k])
        assert 0.0 <= arm["infill_exact_match"] <= 1.0 and arm["infill_problems"] == sz["infill_limit"]
    assert all(math.isfinite(x) for x in s["delta_bits_per_byte_ci95"])
    assert "| held-out bits/byte |" in tc.table(s)

    # held-out loss: every content token of every file scored once; the batched, padded windows give the
    # same sum as a plain one-window-at-a-time loop
    loss = json.loads((out / "eval_curated" / "heldout_loss.json").read_text())
    tok = load_tokenizer(out / "tokenizer")
    encs = [tok.encode(r["content"], add_special_tokens=False).ids for r in held]
    assert loss["tokens"] == sum(len(e) for e in encs)
    assert loss["bytes"] == sum(len(r["content"].encode()) for r in held)
    model = AutoModelForCausalLM.from_pretrained(str(out / "train_curated" / "final")).eval()
    total, L = 0.0, sz["seq_len"]
    with torch.no_grad():
        for e in encs:
            ids = [tok.token_to_id("<|endoftext|>"), *e]
            for st in range(0, len(ids) - 1, L - 1):
                x = torch.tensor([ids[st: st + L]])
                total += float(torch.nn.functional.cross_entropy(model(input_ids=x).logits[0, :-1], x[0, 1:],
                                                                 reduction="sum"))
    assert total / loss["tokens"] == pytest.approx(loss["loss"], rel=1e-4)
    assert loss["bits_per_byte"] == pytest.approx(total / math.log(2) / loss["bytes"], rel=1e-4)
    assert np.array(loss["per_file"]).shape == (len(held), 3)

    # resume: a finished run is read back, not redone; a deleted stage output is redone to the same figure
    (out / "eval_curated" / "infill.json").unlink()
    assert tc.main(["-o", str(out), "--smoke"]) == 0
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["arms"] == s["arms"]

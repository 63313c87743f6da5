"""kill -9 anywhere, lose nothing: each long stage is SIGKILLed (whole process group) at seeded random times,
the same command is run again, and the output equals an uninterrupted run's.

Short mode: one random kill point per stage. `--long`: 10 per stage plus every named kill hook (inside the
checkpoint / shard writes). Byte-identical where the stage is deterministic; where a file format embeds
wall-clock times or random names the content that matters is compared instead (see docs/faults.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import stage_inputs as si
from harness import Stage, kill_at_hook, kill_at_random, seeds
from snapshots import (
    csv_rows,
    h5_content,
    json_file,
    jsonl,
    norm,
    safetensors_content,
    torch_state,
    tree_bytes,
)

pytestmark = pytest.mark.slow


def _check(stage: Stage, root: Path, long: bool, hooks: tuple[tuple[str, str], ...] = ()) -> None:
    ref = stage.reference(root)
    for seed in seeds(long):
        assert kill_at_random(stage, root, seed) == ref, f"{stage.name}: seed {seed} differs: {stage.kills[-1]}"
    if long:
        for var, point in hooks:
            assert kill_at_hook(stage, root, var, point) == ref, f"{stage.name}: hook {point} differs"
    delays = [k["delay_s"] for k in stage.kills if "delay_s" in k]
    n_retry = sum(k.get("attempts", 1) - 1 for k in stage.kills)
    print(f"FAULTS {stage.name}: {len(stage.kills)} kill points identical to the uninterrupted run "
          f"(random delays {delays} s of a {stage.ref_secs:.1f} s run, retries {n_retry}; "
          f"hooks {[k['hook'] for k in stage.kills if 'hook' in k]})")


# ---- code curate: every output file by bytes but stats.json's `config` (it names the output folder)
FAST = ["--no-humaneval", "--mbpp", "none", "--files-per-shard", "6"]


def _curate_snapshot(out: Path) -> dict:
    snap = tree_bytes(out, skip={"stats.json"})
    stats = json.loads((out / "stats.json").read_text())
    stats.pop("config")
    snap["stats.json"] = stats
    return snap


def test_code_curate(tmp_path: Path, faults_long: bool) -> None:
    src = si.curate_sources(tmp_path / "in")
    stage = Stage("code curate", lambda o: ["code", "curate", str(src), "-o", str(o), *FAST], _curate_snapshot)
    hooks = tuple(("DOMAINFM_CURATE_KILL_AT", p) for p in ("s1-1", "s2", "s3-0", "final"))
    _check(stage, tmp_path, faults_long, hooks)


# ---- code pack: deterministic, every file by bytes
def test_code_pack(tmp_path: Path, faults_long: bool) -> None:
    corpus, tok = si.pack_inputs(tmp_path / "in")
    stage = Stage("code pack", lambda o: ["code", "pack", str(corpus), "--tokenizer", str(tok), "-o", str(o),
                                          "--seq-len", "32", "--seed", "5", "--val-fraction", "0.2",
                                          "--shard-mb", "0.005"], tree_bytes)
    _check(stage, tmp_path, faults_long)


# ---- code pretrain: the same losses at the same steps and the same checkpoints (every tensor, bit for bit)
def _pretrain_snapshot(out: Path) -> dict:
    ckpts = {}
    for p in sorted((out / "checkpoints").glob("step_*/state.pt")):
        state = norm(torch_state(p), out)
        # the global Python / NumPy generators are never seeded nor drawn from (data order is a function of
        # (seed, step), see code/train/trainer.py); the checkpoint keeps them, so they differ run to run
        state["rng"] = [{k: v for k, v in r.items() if k not in ("python", "numpy")} for r in state["rng"]]
        ckpts[p.parent.name] = state
    final = out / "final"
    readme = re.sub(r"wall time \S+", "", norm((final / "README.md").read_text(), out))  # the model card's clock
    return {"metrics": norm(jsonl(out / "metrics.jsonl"), out), "checkpoints": ckpts, "readme": readme,
            "summary": json_file(final / "training_summary.json", out),
            "final": tree_bytes(final, root=out, skip={"README.md", "training_summary.json"})}


def test_code_pretrain(tmp_path: Path, faults_long: bool) -> None:
    packed, preset = si.pretrain_inputs(tmp_path / "in")
    stage = Stage("code pretrain", lambda o: [
        "code", "pretrain", "--data", str(packed), "--preset", preset, "-o", str(o), "--batch-size", "4",
        "--grad-accum", "2", "--max-steps", "16", "--warmup", "4", "--lr", "2e-3", "--save-every", "4",
        "--eval-every", "8", "--eval-batches", "1", "--threads", "1", "--no-tensorboard"], _pretrain_snapshot)
    _check(stage, tmp_path, faults_long)


# ---- code index: shard filters by bytes; tantivy segments have random names, so its answers are compared
def _index_snapshot(out: Path) -> dict:
    from domainfm.code.attribution.trace import Tracer

    shards = {}
    for marker in sorted((out / "shards").glob("*/shard.json")):
        shards[marker.parent.name] = (json.loads(marker.read_text()),
                                      (marker.parent / "membership.bloom").read_bytes())
    leftovers = [p.name for p in (out / "shards").iterdir() if p.name.startswith(".")]
    return {"shards": shards, "leftovers": leftovers, "answers": _answers(Tracer(out))}


QUERIES = ["def dedent(text):", "class shlex:\n    def __init__(self", "return a ** b - 42", "import re\nimport"]


def _answers(tracer) -> list:  # noqa: ANN001
    return [(r["membership"], [(h["swhid"], h["score"]) for h in r["hits"]])
            for r in (tracer.trace(q, top_k=5) for q in QUERIES)]


def test_code_index(tmp_path: Path, faults_long: bool) -> None:
    from domainfm.cli import main

    src = si.curate_sources(tmp_path / "in")
    corpus = tmp_path / "corpus"
    assert main(["code", "curate", str(src), "-o", str(corpus), *FAST]) == 0
    stage = Stage("code index", lambda o: ["code", "index", str(corpus), "-o", str(o)], _index_snapshot)
    hooks = tuple(("DOMAINFM_INDEX_KILL_AT", p) for p in ("shard-1-batch", "shard-2-before-rename"))
    _check(stage, tmp_path, faults_long, hooks)


# ---- pathology tile: coords files by content (HDF5 stores times), tiles by bytes, summary but its reason
TILE = ["--tile-size", "32", "--min-tissue", "0.75", "--min-area", "100", "--max-hole", "100", "--save-tiles"]


def _tile_snapshot(out: Path) -> dict:
    return {"coords": {p.name: norm(h5_content(p), out) for p in sorted((out / "coords").glob("*.h5"))},
            "status": {p.name: json_file(p, out) for p in sorted((out / "status").glob("*.json"))},
            "files": tree_bytes(out, skip={"coords", "status", "summary.csv"}),
            # a resumed run notes "done in an earlier run (skipped)" for the slides it did not redo: by design
            "summary": [{**r, "reason": r["reason"].replace(SKIPPED, "")} for r in csv_rows(out / "summary.csv", out)]}


SKIPPED = "done in an earlier run (skipped)"


def test_pathology_tile(tmp_path: Path, faults_long: bool) -> None:
    src = si.slides(tmp_path / "in")
    stage = Stage("pathology tile", lambda o: ["pathology", "tile", str(src), "-o", str(o), *TILE], _tile_snapshot)
    _check(stage, tmp_path, faults_long)


# ---- pathology extract: per-slide feature files by content
def _h5_tree(out: Path) -> dict:
    return {"h5": {str(p.relative_to(out)): norm(h5_content(p), out) for p in sorted(out.rglob("*.h5"))},
            "files": tree_bytes(out, skip_suffix=(".h5",))}


def test_pathology_extract(tmp_path: Path, faults_long: bool) -> None:
    from domainfm.cli import main

    src = si.slides(tmp_path / "in", n=4)
    tiles = tmp_path / "tiling"
    assert main(["pathology", "tile", str(src), "-o", str(tiles), *TILE[:-1]]) == 0
    stage = Stage("pathology extract", lambda o: [
        "pathology", "extract", "--encoder", "resnet18", "--image-size", "32", "--tiles", str(tiles),
        "--slides", str(src), "-o", str(o), "--batch-size", "4", "--workers", "0", "--device", "cpu"], _h5_tree)
    _check(stage, tmp_path, faults_long)


# ---- pathology pretrain: the same loss history and the same weights, bit for bit
def _moco_snapshot(out: Path) -> dict:
    hist = json.loads((out / "history.json").read_text())
    return {"loss": hist["loss"], "weights": safetensors_content(out / "model.safetensors"),
            "last": torch_state(out / "checkpoints" / "last.pt")["model"]}


def test_pathology_pretrain(tmp_path: Path, faults_long: bool) -> None:
    tiles = si.tile_images(tmp_path / "in")
    stage = Stage("pathology pretrain", lambda o: [
        "pathology", "pretrain", str(tiles), "-o", str(o), "--backbone", "resnet18", "--image-size", "32",
        "--batch-size", "8", "--queue-size", "16", "--max-steps", "8", "--checkpoint-every", "2", "--workers", "0",
        "--threads", "1", "--device", "cpu", "--seed", "3", "--resume"], _moco_snapshot)
    _check(stage, tmp_path, faults_long)


# ---- mil train: results and the final model by bytes
def test_mil_train(tmp_path: Path, faults_long: bool) -> None:
    feats, labels = si.mil_cohort(tmp_path / "in")
    stage = Stage("mil train", lambda o: [
        "pathology", "mil", "train", "--features", str(feats), "--labels", str(labels), "--model", "meanpool",
        "-o", str(o), "--epochs", "4", "--folds", "2", "--inner-folds", "0", "--n-boot", "20", "--hidden", "8",
        "--seed", "0"], tree_bytes)
    _check(stage, tmp_path, faults_long)

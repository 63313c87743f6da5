"""`domainfm code evaluate`: pass@k of a local model, an OpenAI-compatible endpoint, or a samples file."""

from __future__ import annotations

import os

import typer


def register(app: typer.Typer) -> None:
    """Add `evaluate` to the code domain's typer app."""

    @app.command("evaluate")
    def evaluate_cmd(
        model: str | None = typer.Argument(None, help="local model folder (any AutoModelForCausalLM)"),
        tasks: str = typer.Option("humaneval", "--tasks", "-t",
                                  help="comma-separated task names (see --list); 'multiple' = all MultiPL-E languages"),
        list_tasks: bool = typer.Option(False, "--list", help="list the tasks and exit"),
        endpoint: str | None = typer.Option(None, "--endpoint", help="OpenAI-compatible completions server URL"),
        endpoint_model: str | None = typer.Option(None, "--endpoint-model", help="'model' sent to the endpoint"),
        samples: str | None = typer.Option(None, "--samples", help="execute these completions (JSONL: task_id, completion)"),
        data_dir: str | None = typer.Option(None, "--data-dir", help="data root (default: $DOMAINFM_DATA)"),
        output: str = typer.Option("runs/evaluate", "-o", "--output", help="output folder"),
        n_samples: int = typer.Option(1, "--n-samples", help="completions per problem"),
        temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy"),
        top_p: float = typer.Option(0.95, "--top-p"),
        max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="default: the task's"),
        seed: int = typer.Option(0, "--seed"),
        batch_size: int = typer.Option(8, "--batch-size", help="sequences per generation batch"),
        limit: int | None = typer.Option(None, "--limit", help="only the first N problems of each task"),
        workers: int | None = typer.Option(None, "--workers", help="parallel sandboxes [default: 2 x CPUs]"),
        timeout: float | None = typer.Option(None, "--timeout", help="seconds per program (default: the task's)"),
        unsafe_local_execution: bool = typer.Option(
            False, "--unsafe-local-execution", help="run model code WITHOUT a sandbox when bwrap is missing"),
        device: str = typer.Option("cpu", "--device"),
    ) -> None:
        """Evaluate a code model: generate, execute in a bubblewrap sandbox, report unbiased pass@k."""
        if list_tasks:
            _print_tasks(data_dir)
            return
        from domainfm.code.evaluate.harness import EvalConfig, evaluate
        from domainfm.code.evaluate.report import markdown_table

        cfg = EvalConfig(tasks=[t.strip() for t in tasks.split(",") if t.strip()], output=output, model=model,
                         endpoint=endpoint, endpoint_model=endpoint_model, samples=samples, data_dir=data_dir,
                         n_samples=n_samples, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, limit=limit,
                         workers=workers or 2 * (os.cpu_count() or 1), timeout=timeout, unsafe_local_execution=unsafe_local_execution,
                         device=device)
        res = evaluate(cfg)
        scores = {k: v for k, v in res.items() if k != "metadata"}
        print(markdown_table(scores, res["metadata"]))
        print(f"wrote {output}/results.json, samples_results.jsonl, results.md")


def _print_tasks(data_dir: str | None) -> None:
    from domainfm.code.evaluate.tasks import TASKS
    from domainfm.core.errors import UserError

    for name in TASKS.names():
        task = TASKS.get(name)()
        try:
            task.resolve(data_dir)
            status = "ready"
        except UserError:
            status = "data missing: " + ", ".join(task.files)
        if (why := task.unavailable()) is not None:
            status = f"skipped: {why}"
        print(f"{name:<34} {task.language:<11} {task.metric:<12} {TASKS.describe(name)}  [{status}]")

"""`domainfm code generate MODEL_DIR --prompt TEXT | --prefix TEXT --suffix TEXT [--path P] | --prompts FILE.jsonl`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `generate` to the code app."""

    @app.command("generate")
    def generate(
        model: Path = typer.Argument(..., help="model folder (save_pretrained model + tokenizer)"),
        prompt: str = typer.Option(None, "--prompt", help="complete this text left to right"),
        prefix: str = typer.Option(None, "--prefix", help="fill in the middle: text before the hole"),
        suffix: str = typer.Option(None, "--suffix", help="fill in the middle: text after the hole"),
        path: str = typer.Option(None, "--path", help="FIM: the file's path in its repository (StarCoder2 "
                                                      "repository-level prompt: the path heads the prefix)"),
        repo_name: str = typer.Option(None, "--repo-name", help="FIM: the repository's name (with --path)"),
        prompts: Path = typer.Option(None, "--prompts",
                                     help='JSONL, one {"prompt": ...} or {"prefix": ..., "suffix": ...} per line'),
        out: Path = typer.Option(None, "-o", "--out", help="with --prompts: write JSONL here (default stdout)"),
        max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="tokens to generate at most"),
        temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy"),
        top_p: float = typer.Option(1.0, "--top-p", help="nucleus sampling mass"),
        seed: int = typer.Option(0, "--seed", help="sampling seed"),
        stop: list[str] = typer.Option(None, "--stop", help="stop string (repeatable)"),
        n_samples: int = typer.Option(1, "--n-samples", help="completions per prompt"),
        batch_size: int = typer.Option(8, "--batch-size", help="sequences per generate call"),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto"),
    ) -> None:
        """Print the completion of a prompt, or (FIM) only the middle between --prefix and --suffix."""
        from domainfm.code.generate.jsonl import run_cli

        run_cli(model, prompt=prompt, prefix=prefix, suffix=suffix, prompts=prompts, out=out, path=path,
                repo_name=repo_name,
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                stop=list(stop or []), n_samples=n_samples, batch_size=batch_size, device=device)

"""The `generate` command's logic: one prompt, one FIM pair, or a JSONL file of either."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from domainfm.code.generate.generator import GenerationConfig, Generator
from domainfm.core.errors import UserError
from domainfm.core.io import read_jsonl, write_jsonl


def read_prompt_file(path: Path) -> list[dict[str, Any]]:
    """Rows of a prompts file; each needs "prompt" or both "prefix" and "suffix" (a clear error otherwise)."""
    rows = list(read_jsonl(path))
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise UserError(f"{path}: record {i} is not a JSON object")
        if "prompt" not in row and not ("prefix" in row and "suffix" in row):
            raise UserError(f'{path}: record {i} has neither "prompt" nor "prefix" + "suffix"')
    return rows


def generate_rows(gen: Generator, rows: list[dict[str, Any]], cfg: GenerationConfig) -> list[dict[str, Any]]:
    """Each row plus "completions" (n_samples strings); completions and infills batched separately."""
    comp = [i for i, r in enumerate(rows) if "prompt" in r]
    fim = [i for i, r in enumerate(rows) if "prompt" not in r]
    results: dict[int, list[str]] = {}
    if comp:
        results.update(zip(comp, gen.complete([str(rows[i]["prompt"]) for i in comp], cfg), strict=True))
    # FIM rows may name their file ("path", optionally "repo_name"): the StarCoder2 repository-level prompt
    groups: dict[str | None, list[int]] = {}
    for i in fim:
        groups.setdefault(rows[i].get("repo_name") if "path" in rows[i] else None, []).append(i)
    for repo, idx in groups.items():
        paths = [str(rows[i]["path"]) if "path" in rows[i] else None for i in idx]
        res = gen.infill([str(rows[i]["prefix"]) for i in idx], [str(rows[i]["suffix"]) for i in idx], cfg,
                         paths=paths if any(p is not None for p in paths) else None, repo_name=repo)
        results.update(zip(idx, res, strict=True))
    return [{**row, "completions": results[i]} for i, row in enumerate(rows)]


def run_cli(model: Path, *, prompt: str | None, prefix: str | None, suffix: str | None, prompts: Path | None,
            out: Path | None, device: str, path: str | None = None, repo_name: str | None = None,
            **gen_kwargs: Any) -> None:
    modes = sum(x is not None for x in (prompt, prompts)) + (prefix is not None or suffix is not None)
    if modes != 1:
        raise UserError("give exactly one of --prompt, --prefix/--suffix, or --prompts")
    if (path is not None or repo_name is not None) and prefix is None and suffix is None:
        raise UserError("--path / --repo-name go with --prefix/--suffix (fill in the middle)")
    cfg = GenerationConfig(**gen_kwargs)
    cfg.validate()
    gen = Generator(model, device=device)
    if prompts is not None:
        rows = generate_rows(gen, read_prompt_file(prompts), cfg)
        if out is not None:
            write_jsonl(out, rows)
            print(f"wrote {len(rows)} rows to {out}", file=sys.stderr)
        else:
            for row in rows:
                print(json.dumps(row, ensure_ascii=False))
        return
    if prompt is not None:
        texts = gen.complete([prompt], cfg)[0]
    else:
        texts = gen.infill([prefix or ""], [suffix or ""], cfg, paths=[path] if path is not None else None,
                           repo_name=repo_name)[0]
    for k, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {k}")
        print(text)

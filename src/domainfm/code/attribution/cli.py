"""`domainfm code index | trace | datacard`: where did this code come from, and what is in the corpus."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from domainfm.core.locks import writes_output


def register(app: typer.Typer) -> None:
    """Add `index`, `trace` and `datacard` to the code app."""

    @app.command("index")
    @writes_output("out")
    def index(
        corpus: Path = typer.Argument(..., help="curated corpus folder (`code curate` output, with data/*.parquet)"),
        out: Path = typer.Option(..., "-o", "--out", help="index folder to write (reruns add new shards only)"),
        width: int = typer.Option(50, "--width", help="n-gram width in UTF-8 bytes of the membership filter"),
        stride: int = typer.Option(1, "--stride", help="n-gram stride over the corpus (1: no false negatives "
                                                       "for any span >= width)"),
        fpr: float = typer.Option(1e-3, "--fpr", help="target false-positive rate per n-gram lookup per shard"),
        workers: int = typer.Option(1, "--workers", help="shards indexed in parallel (ray: CPUs of a local instance)"),
        executor: str = typer.Option("local", "--executor", help="local | ray (see docs/scale.md)"),
        ray_address: str = typer.Option("", "--ray-address", help="--executor ray: join this cluster (HOST:PORT)"),
    ) -> None:
        """Build the attribution index: a Bloom filter of n-grams + a BM25 full-text index per corpus shard."""
        from domainfm.code.attribution.index import IndexConfig, build_index
        from domainfm.core.executor import pool_options

        s = build_index(corpus, out, IndexConfig(width=width, stride=stride, fpr=fpr), executor=executor,
                        workers=workers, pool_opts=pool_options(executor, ray_address))
        rate = f", {s['text_mb_per_s']} MB/s of text" if s["text_mb_per_s"] else ""
        typer.echo(f"index {out}: {s['n_shards']} shards ({len(s['shards_new'])} new, {len(s['shards_reused'])} "
                   f"already indexed), {s['n_docs']:,} files, {s['n_ngrams']:,} n-grams of {s['width']} bytes, "
                   f"filters {s['bloom_bytes'] / 1e6:.1f} MB, false-positive rate per lookup <= "
                   f"{s['fpr_index']:.2g}; {s['seconds']:.1f}s{rate}")

    @app.command("trace")
    def trace(
        index: Path = typer.Argument(..., help="index folder (`code index`)"),
        snippet: str = typer.Argument(None, help="the code to trace (or --file / --samples)"),
        file: Path = typer.Option(None, "--file", help="trace the text of this file"),
        samples: Path = typer.Option(None, "--samples", help="JSONL of generations (`code generate` / "
                                                             "`code evaluate` output): one line per sample"),
        top_k: int = typer.Option(5, "--top-k", help="matching training files to show"),
        min_span: int = typer.Option(None, "--min-span", help="with --samples: a sample counts as containing "
                                                              "training data at a covered span of this many "
                                                              "characters (default: the n-gram width)"),
        as_json: bool = typer.Option(False, "--json", help="print JSON (offsets instead of highlighting)"),
        color: bool = typer.Option(None, "--color/--no-color", help="highlight matching lines (default: on a tty)"),
    ) -> None:
        """Is this snippet in the training data, and which training files does it match?"""
        from domainfm.code.attribution.trace import Tracer, render, trace_samples
        from domainfm.core.errors import UserError
        from domainfm.core.io import read_jsonl

        if sum(x is not None for x in (snippet, file, samples)) != 1:
            raise UserError("give exactly one of: a SNIPPET, --file F, or --samples samples.jsonl")
        tracer = Tracer(index)
        use_color = sys.stdout.isatty() if color is None else color
        if samples is not None:
            if not samples.is_file():
                raise UserError(f"{samples}: no such file")
            try:
                rows = list(read_jsonl(samples))
            except ValueError as exc:
                raise UserError(f"{samples}: not JSONL ({exc})") from None
            results, summary = trace_samples(tracer, rows, min_span or tracer.width, top_k=1)
            if as_json:
                typer.echo(json.dumps({"samples": results, "summary": summary}))
                return
            for r in results:
                top = r["top_hit"]
                where = f"{top['repo_name']}/{top['path']}" if top else "-"
                flag = "COPIED" if r["copied"] else "ok"
                typer.echo(f"{r['id']}#{r['sample']}: {flag:<6} longest training span {r['longest_span_chars']:>5} "
                           f"chars of {r['chars']:>5}; closest file {where}" + (f" ({r['error']})" if r["error"] else ""))
            typer.echo(f"{summary['with_training_span']} of {summary['samples']} samples contain a span of >= "
                       f"{summary['min_span_chars']} characters found in the training data")
            return
        if file is not None:
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise UserError(f"{file}: {exc.strerror or exc}") from None
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{file} is not UTF-8 text (binary input cannot be traced)") from None
        else:
            text = snippet
        result = tracer.trace(text, top_k=top_k, with_content=not as_json)
        if as_json:
            typer.echo(json.dumps(result))
        else:
            typer.echo(render(result, use_color))

    @app.command("datacard")
    def datacard(
        corpus: Path = typer.Argument(..., help="curated corpus folder (`code curate` output)"),
        out: Path = typer.Option(..., "-o", "--out", help="folder for datacard.md, datacard.html, swhids.parquet"),
    ) -> None:
        """Write the corpus's data card (Markdown + HTML) and its list of SWHIDs."""
        from domainfm.code.attribution.datacard import write_datacard

        paths = write_datacard(corpus, out)
        typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))

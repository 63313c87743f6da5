"""Demo stage: index the curated corpus, write its data card, and trace the demo model's generations."""

from __future__ import annotations

from pathlib import Path

from domainfm.core.demo import DemoContext
from domainfm.core.errors import UserError
from domainfm.core.io import atomic_write_json, read_jsonl


def run(ctx: DemoContext) -> None:
    from domainfm.code.attribution.datacard import write_datacard
    from domainfm.code.attribution.index import build_index
    from domainfm.code.attribution.trace import Tracer, trace_samples

    corpus = ctx.state.get("corpus")
    if not corpus or not Path(corpus).is_dir():
        raise UserError("the attribution demo needs the curated corpus (ctx.state['corpus']); run the whole "
                        "code demo (`domainfm demo code`)")
    root = Path(ctx.out) / "code" / "attribution"
    summary = build_index(Path(corpus), root / "index")
    print(f"  index: {summary['n_docs']:,} files in {summary['n_shards']} shards, {summary['n_ngrams']:,} n-grams "
          f"of {summary['width']} bytes, false-positive rate per lookup <= {summary['fpr_index']:.2g}")
    card = write_datacard(Path(corpus), root / "datacard")
    print(f"  data card: {card['md']} (+ .html), SWHID list: {card['swhids']}")
    tracer = Tracer(root / "index")
    gens = ctx.state.get("generations")
    if gens and Path(gens).is_file():
        results, s = trace_samples(tracer, list(read_jsonl(gens)), min_span=tracer.width)
        # the same JSON as `code trace INDEX --samples F --json` (the run report reads it)
        atomic_write_json(root / "traces.json", {"samples": results, "summary": s})
        for r in results:
            top = r["top_hit"]
            print(f"  trace of the demo model's {r['id']}: longest span found in training data "
                  f"{r['longest_span_chars']} chars of {r['chars']}; closest file "
                  f"{top['repo_name'] + '/' + top['path'] if top else '-'}")
        print(f"  {s['with_training_span']} of {s['samples']} generations contain a span of >= "
              f"{s['min_span_chars']} characters copied from the training data")
    # a positive control: an excerpt of a training file must be found, with its SWHID
    row = next(iter(control_row(Path(corpus))), None)
    if row is not None:
        excerpt = "\n".join(row["content"].splitlines()[:12])
        res = tracer.trace(excerpt, top_k=1)
        hit = res["hits"][0] if res["hits"] else None
        print(f"  control: an excerpt of {row['repo_name']}/{row['path']} -> "
              f"{100 * res['membership']['fraction']:.0f}% of its n-grams found; top file "
              f"{hit['repo_name'] + '/' + hit['path'] + ' ' + hit['swhid'] if hit else '-'}")
    ctx.state["trace_index"] = str(root / "index")


def control_row(corpus: Path) -> list[dict]:
    """The first training file of the corpus with at least 12 lines (the control excerpt)."""
    import pyarrow.parquet as pq

    for shard in sorted((corpus / "data").glob("*.parquet")):
        for row in pq.read_table(shard, columns=["repo_name", "path", "content"]).to_pylist():
            if row["content"].count("\n") >= 12 and len(row["content"]) >= 400:
                return [row]
    return []

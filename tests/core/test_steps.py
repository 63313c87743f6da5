from __future__ import annotations

from collections.abc import Iterable, Iterator

from domainfm.core.steps import Filter, PipelineStats, Record, Step, StepContext, run_pipeline


class Short(Filter):
    name = "short"

    def filter(self, rec: Record) -> bool | tuple[bool, str]:
        return True if rec["size"] < 10 else (False, "too_long")


class Upper(Step):
    name = "upper"

    def process(self, records: Iterable[Record], ctx: StepContext) -> Iterator[Record]:
        for rec in records:
            if rec["text"] == "drop":
                ctx.drop(rec, self.name, "dropword")
                continue
            yield {**rec, "text": rec["text"].upper()}


def test_pipeline_counts_everything() -> None:
    dropped: list[tuple[str, str, str]] = []
    ctx = StepContext(drop_sink=lambda r, s, why: dropped.append((r["text"], s, why)))
    recs = [{"text": t, "size": len(t)} for t in ["a", "bb", "drop", "x" * 20]]
    out = list(run_pipeline([Short(), Upper()], recs, ctx))
    assert [r["text"] for r in out] == ["A", "BB"]
    assert ctx.stats.step("short").n_in == 4 and ctx.stats.step("short").n_out == 3
    assert ctx.stats.step("upper").n_out == 2
    assert ctx.stats.dropped() == {"too_long": 1, "dropword": 1}
    assert sorted(dropped) == [("drop", "upper", "dropword"), ("x" * 20, "short", "too_long")]
    # every record accounted for
    assert len(out) + sum(ctx.stats.dropped().values()) == len(recs)
    assert ctx.stats.step("short").bytes_in == 1 + 2 + 4 + 20


def test_stats_merge_and_roundtrip() -> None:
    a, b = StepContext(), StepContext()
    list(Short()(iter([{"size": 1}, {"size": 50}]), a))
    list(Short()(iter([{"size": 70}]), b))
    a.stats.merge(b.stats)
    back = PipelineStats.from_dict(a.stats.to_dict())
    assert back.step("short").dropped == {"too_long": 2}
    assert back.step("short").n_in == 3

"""Pipeline steps the datatrove way: a step is a generator in, generator out over records.

A record is a plain ``dict`` (Parquet- and JSON-friendly). A `Filter` answers ``True`` (keep) or
``(False, reason)`` (drop); the base class counts what it keeps and drops, and hands every dropped
record to the context's drop sink, so nothing is silently lost.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]
DropSink = Callable[[Record, str, str], None]  # (record, step_name, reason)


@dataclass
class StepStats:
    """Counts for one step: records in, kept, dropped by reason, and bytes (when records carry `size`)."""

    name: str
    n_in: int = 0
    n_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: Counter = field(default_factory=Counter)

    def merge(self, other: StepStats) -> None:
        self.n_in += other.n_in
        self.n_out += other.n_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.dropped.update(other.dropped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.n_in,
            "out": self.n_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "dropped": dict(sorted(self.dropped.items())),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepStats:
        return cls(d["name"], d["in"], d["out"], d["bytes_in"], d["bytes_out"], Counter(d["dropped"]))


class PipelineStats:
    """Ordered per-step stats; mergeable across shards; JSON round-trip."""

    def __init__(self) -> None:
        self.steps: dict[str, StepStats] = {}

    def step(self, name: str) -> StepStats:
        if name not in self.steps:
            self.steps[name] = StepStats(name)
        return self.steps[name]

    def merge(self, other: PipelineStats) -> None:
        for name, st in other.steps.items():
            self.step(name).merge(st)

    def dropped(self) -> Counter:
        total: Counter = Counter()
        for st in self.steps.values():
            total.update(st.dropped)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [st.to_dict() for st in self.steps.values()]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineStats:
        out = cls()
        for sd in d["steps"]:
            out.steps[sd["name"]] = StepStats.from_dict(sd)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def _size(rec: Record) -> int:
    return int(rec.get("size", 0) or 0)


@dataclass
class StepContext:
    """What a running step may touch: the stats and the sink for dropped records. Nothing global."""

    stats: PipelineStats = field(default_factory=PipelineStats)
    drop_sink: DropSink | None = None
    rank: int = 0
    world_size: int = 1

    def drop(self, rec: Record, step: str, reason: str) -> None:
        st = self.stats.step(step)
        st.dropped[reason] += 1
        if self.drop_sink is not None:
            self.drop_sink(rec, step, reason)


class Step:
    """A generator in, generator out transformation. Subclasses implement `process`.

    `process(records, ctx)` yields output records and calls ``ctx.drop(rec, self.name, reason)`` for
    anything it does not pass on. The base class counts records and bytes in and out.
    """

    name: str = "step"

    def process(self, records: Iterable[Record], ctx: StepContext) -> Iterator[Record]:
        raise NotImplementedError

    def __call__(self, records: Iterable[Record], ctx: StepContext) -> Iterator[Record]:
        st = ctx.stats.step(self.name)

        def counted_in() -> Iterator[Record]:
            for rec in records:
                st.n_in += 1
                st.bytes_in += _size(rec)
                yield rec

        for rec in self.process(counted_in(), ctx):
            st.n_out += 1
            st.bytes_out += _size(rec)
            yield rec


class Filter(Step):
    """A step that keeps or drops each record: `filter` returns ``True`` or ``(False, reason)``."""

    name = "filter"

    def filter(self, rec: Record) -> bool | tuple[bool, str]:
        raise NotImplementedError

    def process(self, records: Iterable[Record], ctx: StepContext) -> Iterator[Record]:
        for rec in records:
            verdict = self.filter(rec)
            if verdict is True or (isinstance(verdict, tuple) and verdict[0]):
                yield rec
            else:
                reason = verdict[1] if isinstance(verdict, tuple) else self.name
                ctx.drop(rec, self.name, reason)


def run_pipeline(steps: Iterable[Step], records: Iterable[Record], ctx: StepContext) -> Iterator[Record]:
    """Chain steps lazily: records flow through one at a time (or in the batches a step chooses)."""
    stream: Iterable[Record] = records
    for step in steps:
        stream = step(stream, ctx)
    yield from stream

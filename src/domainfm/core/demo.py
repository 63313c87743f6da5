"""The demo contract shared by both domains: an ordered list of stages over one context.

Each stage is a module path with a ``run(ctx: DemoContext) -> None`` function. A stage reads what
earlier stages left in ``ctx.state`` (paths of corpora, models, feature files), does its work under
``ctx.out``, and records its own outputs there. Stages print what they do; the whole walk is timed.
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domainfm.core.progress import get_logger

log = get_logger("demo")


@dataclass
class DemoContext:
    out: Path
    data_dir: Path | None = None
    workers: int = 2
    quick: bool = False  # a smaller walk (used by the tests)
    state: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_env(cls, out: Path, workers: int = 2, quick: bool = False) -> DemoContext:
        env = os.environ.get("DOMAINFM_DATA")
        return cls(out=Path(out), data_dir=Path(env) if env else None, workers=workers, quick=quick)


def run_stages(domain: str, stages: list[str], ctx: DemoContext) -> None:
    """Run each `module:function` stage in order, timing each; a failing stage stops the demo."""
    for spec in stages:
        mod_name, _, fn_name = spec.partition(":")
        fn = getattr(importlib.import_module(mod_name), fn_name or "run")
        label = f"{domain}/{mod_name.rsplit('.', 2)[-2] if mod_name.endswith('.demo') else mod_name}"
        print(f"\n=== {label} ===", flush=True)
        t0 = time.perf_counter()
        fn(ctx)
        ctx.timings[label] = round(time.perf_counter() - t0, 1)
        print(f"--- {label} done in {ctx.timings[label]:.1f}s", flush=True)

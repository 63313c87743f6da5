"""The evaluation task registry: one small module per benchmark (see `base.Task`)."""

from __future__ import annotations

from domainfm.code.evaluate.tasks.base import LoadedData, Problem, Task, truncate_at_stop
from domainfm.code.evaluate.tasks.cruxeval import CruxEvalO
from domainfm.code.evaluate.tasks.evalplus import HumanEvalPlus, HumanEvalPlusMini, MBPPPlus
from domainfm.code.evaluate.tasks.fim import (
    HumanEvalInfilling,
    HumanEvalInfillingMulti,
    HumanEvalInfillingSpan,
    HumanEvalInfillingSpanLight,
    MultiPLEFimPy,
)
from domainfm.code.evaluate.tasks.gsm8k_pal import GSM8KPAL
from domainfm.code.evaluate.tasks.humaneval import HumanEval
from domainfm.code.evaluate.tasks.mbpp import MBPP
from domainfm.code.evaluate.tasks.multiple import MULTIPLE_TASKS
from domainfm.core.registry import Registry

TASKS: Registry[type[Task]] = Registry("evaluation task")
for _cls in (HumanEval, HumanEvalPlus, HumanEvalPlusMini, MBPP, MBPPPlus, HumanEvalInfilling,
             HumanEvalInfillingMulti, HumanEvalInfillingSpan, HumanEvalInfillingSpanLight, MultiPLEFimPy,
             CruxEvalO, GSM8KPAL, *MULTIPLE_TASKS.values()):
    TASKS.register(_cls.name, _cls)

# names that stand for several tasks on the command line
TASK_GROUPS = {"multiple": sorted(MULTIPLE_TASKS)}


def expand_task_names(names: list[str]) -> list[str]:
    """`multiple` -> every MultiPL-E language task; other names unchanged (order kept, no duplicates)."""
    out: list[str] = []
    for n in names:
        for m in TASK_GROUPS.get(n, [n]):
            if m not in out:
                out.append(m)
    return out


def get_task(name: str) -> Task:
    return TASKS.get(name)()


__all__ = ["TASKS", "TASK_GROUPS", "expand_task_names", "LoadedData", "Problem", "Task", "get_task", "truncate_at_stop"]

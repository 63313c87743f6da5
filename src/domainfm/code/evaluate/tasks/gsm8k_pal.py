"""GSM8K with program-aided reasoning (PAL, Gao et al. 2023), as StarCoder2 reports it ("GSM8K (PAL)").

The prompt is PAL's published 8-shot `MATH_PROMPT` (`reasoning-machines/pal`, `pal/prompt/math_prompts.py`,
the same 8 worked examples the bigcode harness's `pal-gsm8k-greedy` task uses), with the question put in
the `{question}` slot; the model writes `def solution(): ...`, generation stops at a blank-blank line
(`"\\n\\n\\n"`, PAL's `stop`), and anything from a following `Q:` on is cut (bigcode). The program is run and
scored as PAL's `scripts/gsm_eval.py` scores it: `float(solution())` must be within 1e-3 of the answer.
"""

from __future__ import annotations

import re
from pathlib import Path

from domainfm.code.evaluate.sandbox import Program
from domainfm.code.evaluate.tasks.base import Problem, Task, python_program, read_jsonl_any

# PAL's MATH_PROMPT, verbatim (Apache-2.0, Copyright 2022 PAL Authors): '''...'''.strip() + '\n\n\n'
MATH_PROMPT = '''
Q: Olivia has $23. She bought five bagels for $3 each. How much money does she have left?

# solution in Python:


def solution():
    """Olivia has $23. She bought five bagels for $3 each. How much money does she have left?"""
    money_initial = 23
    bagels = 5
    bagel_cost = 3
    money_spent = bagels * bagel_cost
    money_left = money_initial - money_spent
    result = money_left
    return result





Q: Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?

# solution in Python:


def solution():
    """Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?"""
    golf_balls_initial = 58
    golf_balls_lost_tuesday = 23
    golf_balls_lost_wednesday = 2
    golf_balls_left = golf_balls_initial - golf_balls_lost_tuesday - golf_balls_lost_wednesday
    result = golf_balls_left
    return result





Q: There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?

# solution in Python:


def solution():
    """There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?"""
    computers_initial = 9
    computers_per_day = 5
    num_days = 4  # 4 days between monday and thursday
    computers_added = computers_per_day * num_days
    computers_total = computers_initial + computers_added
    result = computers_total
    return result





Q: Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?

# solution in Python:


def solution():
    """Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?"""
    toys_initial = 5
    mom_toys = 2
    dad_toys = 2
    total_received = mom_toys + dad_toys
    total_toys = toys_initial + total_received
    result = total_toys
    return result





Q: Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?

# solution in Python:


def solution():
    """Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?"""
    jason_lollipops_initial = 20
    jason_lollipops_after = 12
    denny_lollipops = jason_lollipops_initial - jason_lollipops_after
    result = denny_lollipops
    return result





Q: Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?

# solution in Python:


def solution():
    """Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?"""
    leah_chocolates = 32
    sister_chocolates = 42
    total_chocolates = leah_chocolates + sister_chocolates
    chocolates_eaten = 35
    chocolates_left = total_chocolates - chocolates_eaten
    result = chocolates_left
    return result





Q: If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?

# solution in Python:


def solution():
    """If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?"""
    cars_initial = 3
    cars_arrived = 2
    total_cars = cars_initial + cars_arrived
    result = total_cars
    return result





Q: There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?

# solution in Python:


def solution():
    """There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?"""
    trees_initial = 15
    trees_after = 21
    trees_added = trees_after - trees_initial
    result = trees_added
    return result





Q: {question}

# solution in Python:
'''.strip() + '\n\n\n'  # noqa: E501


def parse_answer(answer: str) -> float:
    """The reference number after '####' (commas removed)."""
    return float(answer.split("####")[-1].strip().replace(",", ""))


class GSM8KPAL(Task):
    """GSM8K test (1,319 problems), PAL's 8-shot prompt: the generated solution() is run and its value compared."""

    name = "gsm8k-pal"
    stop = ("\n\n\n",)  # PAL's ProgramInterface(stop='\n\n\n'); also bigcode's stop words for this task
    max_new_tokens = 512
    files = ("code/gsm8k/test.jsonl",)
    timeout = 10.0

    def read(self, paths: list[Path]) -> list[Problem]:
        out = []
        for i, r in enumerate(read_jsonl_any(paths[0])):
            value = parse_answer(r["answer"])
            prompt = MATH_PROMPT.format(question=r["question"])  # as PAL's gsm_eval.py builds it
            out.append(Problem(f"GSM8K/{i}", prompt, reference=f"def solution():\n    return {value!r}\n",
                               meta={"value": value}))
        return out

    def postprocess(self, problem: Problem, generation: str) -> str:
        body = super().postprocess(problem, generation)
        if "Q:" in body:  # bigcode's pal task: a new question starts after the program
            body = body.split("Q:")[0]
        return re.sub(r"\n+$", "\n", body.strip("\n") + "\n")

    def program(self, problem: Problem, completion: str) -> Program:
        src = (f"{completion}\n"
               f"_dfm_got = float(solution())\n"
               f"assert abs(_dfm_got - {problem.meta['value']!r}) < 1e-3, f'got {{_dfm_got}}'\n")
        return python_program(src, self.timeout)

    def exact_match(self, problem: Problem, completion: str) -> bool | None:
        return None

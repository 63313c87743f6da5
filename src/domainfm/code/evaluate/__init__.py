"""code.evaluate: a reproducible, sandboxed evaluation harness for code models (pass@k, FIM, exact match).

Python API: `evaluate(EvalConfig(...))`, the task registry `TASKS`, and the `Sandbox` that runs programs.
"""

from __future__ import annotations

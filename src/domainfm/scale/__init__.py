"""Running the same commands on more than one machine: the `ray` executor (see docs/scale.md).

Imports only `domainfm.core`; `domainfm.core.executor.get_pool("ray")` loads `ray_pool` on first use,
so neither `import domainfm` nor the local executor ever imports ray.
"""

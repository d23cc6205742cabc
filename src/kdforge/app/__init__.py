"""The application layer: from a recipe (or the Python API's objects) to a run folder with its report.

`build.build_run` is the one step that turns a recipe's losses, taps, teacher side and training settings into
something the library's loop can train; `run.run_recipe` drives the stages. Nothing below this package knows
about recipes (see docs/architecture.md). This `__init__` imports nothing, so importing one module of the
application does not load the others.
"""

"""kdforge's test suite (a package so that `python -m tests.update_golden` runs from the repository root)."""

"""The project's exception hierarchy.

Every error a user can cause is a `KDForgeError`; the CLI turns it into a one-line message and exit code 2.
The subclasses also inherit `ValueError` (scikit-learn's trick), so callers can catch either.
"""


class KDForgeError(Exception):
    """Base class of every error kdforge raises on bad user input or a failed run."""


class RecipeError(KDForgeError, ValueError):
    """A recipe (YAML or Python) has a wrong structure, type or value."""


class UnknownNameError(KDForgeError, ValueError):
    """A name (loss, dataset, model prefix, module path) is not known."""


class ShapeMismatchError(KDForgeError, ValueError):
    """Teacher and student (or a tensor and what a loss expects) have incompatible shapes."""


class TrainingError(KDForgeError, RuntimeError):
    """Training cannot continue: a non-finite loss, a missing checkpoint to resume from."""


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for a report or log that records a failure and goes on."""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}"

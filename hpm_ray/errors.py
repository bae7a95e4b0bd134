"""One exception type for problems the user can fix.

The CLI turns it into exit code 2 and a one-line message; library callers get a ``ValueError`` subclass,
so ``except ValueError`` keeps working for them.
"""


class HPMError(ValueError):
    """Bad input or configuration: the message names the problem in one line."""


class DataError(HPMError):
    """The data cannot be used as asked (missing column, NaN target, too few rows, ...)."""


class SpecError(HPMError):
    """An experiment spec or a CLI flag is invalid."""


def last_line(exc: BaseException) -> str:
    """The last non-empty line of an error's text: the user's exception where Ray puts a traceback before it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else ""

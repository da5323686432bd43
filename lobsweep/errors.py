"""User-facing errors.

Anything a user can cause (a bad file, a bad parameter) raises ``UserError``.
The CLI prints its message as one line and exits with ``exit_code``; no
traceback is shown and nothing is left half-written.
"""


class UserError(Exception):
    """An error caused by user input; printed as one line, exit code 2."""

    exit_code = 2


class DataError(UserError):
    """The data file does not follow the competition contract."""

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


def read_json(path: str, error: type[UserError] = UserError):
    """The JSON value in ``path``; malformed JSON raises ``error`` naming the file, line and problem.

    A missing file raises FileNotFoundError: each caller words that case for its own input.
    """
    import json
    with open(path) as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as exc:
            raise error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None

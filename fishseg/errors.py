"""User-facing errors: a message that names the problem and the fix, no traceback."""


class FishsegError(Exception):
    """An error the user can fix (bad params, bad input, missing credentials).

    The command exits with ``exit_code`` (2: usage or input error) after one log line.
    """

    exit_code = 2

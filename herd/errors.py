"""User-facing errors: a `HerdError` carries one line saying what is wrong and what to do.

The CLI prints it without a traceback and exits with status 2.
"""


class HerdError(ValueError):
    """An error the user caused and can fix (bad path, bad option, bad input)."""

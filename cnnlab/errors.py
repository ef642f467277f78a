"""Errors a user can cause.

Anything raised as :class:`UserError` is printed by the CLI as one line (``error: ...``) with exit
code 2 and no traceback. Everything else is a bug in cnnlab.
"""


class UserError(Exception):
    """A problem the user can fix: bad flag, missing or corrupt data, wrong checkpoint, bad image."""

"""Errors a user can cause.

Anything raised as :class:`UserError` is printed by the CLI as one line (``error: ...``) with exit
code 2 and no traceback. Everything else is a bug in cnnlab.
"""


class UserError(Exception):
    """A problem the user can fix: bad flag, missing or corrupt data, wrong checkpoint, bad image."""


class WrongFileKind(UserError):
    """A file given where a run directory or checkpoint was expected (e.g. arguments swapped); the CLI
    adds the command's usage line."""


class Diverged(Exception):
    """Training produced a non-finite loss (exit code 3 from the CLI)."""


class Interrupted(Exception):
    """Training stopped on request (Ctrl-C) after saving ``last.pt`` (exit code 130 from the CLI)."""

    run_dir: object = None  # the run to resume, when known

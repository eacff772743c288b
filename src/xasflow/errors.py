"""The project's error types: what a user can fix, versus a bug.

The CLI prints a ``UserError`` as one line on stderr and exits with code 2; any other exception
is a bug in xasflow and keeps its traceback.

- ``UserError``: bad configuration, a malformed or missing input file, a refused checkpoint.
- ``EnvironmentFailure``: the machine, not the physics: no space left, no permission, a
  missing program. A job that meets one stops (exit 2); nothing is cached or counted as a
  failed site, so a rerun after the fix recomputes.
"""

from __future__ import annotations


class XasflowError(Exception):
    """Base of every error xasflow raises on purpose."""


class UserError(XasflowError):
    """Something the user can fix; the message names the file or key, the value and what is valid."""


class EnvironmentFailure(UserError):
    """The machine failed the job (disk full, permission, program missing); never a physics result."""

"""The project's error types: what a user can fix, versus a bug.

The CLI prints a ``UserError`` as one line on stderr and exits with code 2; any other exception
is a bug in xasflow and keeps its traceback.

- ``UserError``: bad configuration, a malformed or missing input file, a refused checkpoint.
- ``SpectrumReadError``: a spectrum file (or one group of an Athena project) that cannot be
  turned into a usable spectrum; its message is ``"<path>: <problem>"`` on one line.
- ``EnvironmentFailure``: the machine, not the physics: no space left, no permission, a
  missing program. A job that meets one stops (exit 2); nothing is cached or counted as a
  failed site, so a rerun after the fix recomputes.
"""

from __future__ import annotations

from pathlib import Path


class XasflowError(Exception):
    """Base of every error xasflow raises on purpose."""


class UserError(XasflowError):
    """Something the user can fix; the message names the file or key, the value and what is valid."""


class EnvironmentFailure(UserError):
    """The machine failed the job (disk full, permission, program missing); never a physics result."""


class FileProblem(UserError):
    """A user's file that cannot be used; the message is always one line, ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self):
        # Keep the two-argument constructor working across pickling (multiprocessing, Snakemake).
        return (type(self), (self.path, self.problem))


class SpectrumReadError(FileProblem):
    """A spectrum file that cannot be turned into a usable spectrum.

    The message is always one line, ``"<path>: <problem>"``; ``path`` may name one group of an
    Athena project (``PtData.prj:10wt% 20K``).
    """

"""Launching external programs (FEFF executables, FDMNES) and telling machine failures from physics.

A calculation has two sides: the recipe (input files, parameters) and the machine that runs it.
:class:`ProgramLaunch` is the machine side, a launch profile: the argv that starts the program
(``("mpirun", "-n", "4", "feff")``). :func:`run_program` runs it in a directory it is given
(never the process's cwd), with stdin from ``/dev/null``, stdout and stderr in a log file in that
directory, a time limit, and in its own process group (session): at the time limit the whole
group gets SIGTERM, then SIGKILL after a grace period, so mpirun's ranks and any other
grandchildren never outlive the run.

A full disk, a quota, a file-size limit, a missing permission or a missing program are failures
of the machine, not of a site's physics: they raise :class:`~xasflow.errors.EnvironmentFailure`
(one line naming the directory and the cause) instead of being recorded as a failed site, so
nothing wrong is cached or counted and a rerun after the fix recomputes. The helpers here
recognise them from an ``OSError``'s errno, from the text a program or library reports (Rust's
``(os error 28)``, a Fortran runtime's "No space left on device") and by probing the directory.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from xasflow.errors import EnvironmentFailure, UserError

logger = logging.getLogger(__name__)

#: errno values that mean the machine, not the calculation, failed; with a short cause.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
# The same causes as C's strerror and Fortran runtimes print them in logs and messages.
_ENVIRONMENT_TEXT = re.compile(
    r"no space left on device|disk quota exceeded|file too large|file size limit exceeded"
    r"|read-only file system|permission denied|operation not permitted",
    re.IGNORECASE,
)
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Rust's std::io::Error shows errno
PROBE_BYTES = 64 * 1024  # a write this small failing means the directory cannot take any output
LOG_TAIL_BYTES = 64 * 1024  # how much of a program's log is searched for an environment cause
POLL_SECONDS = 0.1  # how often a stopping process group is checked during the grace period


@dataclass(frozen=True)
class ProgramLaunch:
    """How to start an external program: the launch profile of a calculation.

    ``command`` is the argv (no shell), e.g. ``("feff",)`` or ``("mpirun", "-n", "4", "fdmnes")``;
    a list is turned into a tuple. ``program`` names the program in messages ("FEFF", "FDMNES").
    ``grace_seconds`` is the time between SIGTERM and SIGKILL when a run is stopped (s).
    """

    command: tuple[str, ...]
    program: str = "program"
    grace_seconds: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.command, str):
            raise UserError(
                f"the {self.program} command must be a list of arguments such as ['mpirun', '-n', '4', "
                f"'{self.command}'], not the string {self.command!r}"
            )
        object.__setattr__(self, "command", tuple(str(argument) for argument in self.command))
        if not self.command or not self.command[0]:
            raise UserError(f"the {self.program} command is empty: give the program to run, e.g. ['feff']")
        if not self.grace_seconds >= 0:
            raise UserError(f"grace_seconds is {self.grace_seconds} s for {self.program}; it must be >= 0")


@dataclass(frozen=True)
class ProgramRun:
    """How one run of an external program ended.

    ``returncode`` is the exit status (negative: killed by that signal), None when the run was
    stopped at its time limit (``timed_out``). ``seconds`` is the wall time (s); ``log_path`` the
    file holding the program's stdout and stderr.
    """

    returncode: int | None
    timed_out: bool
    seconds: float
    log_path: Path


def environment_cause_of_text(text: str) -> str:
    """The machine failure a message or log reports ("no space left on device", ...), or ''."""
    for number in _RUST_OS_ERROR.findall(text):
        if int(number) in ENVIRONMENT_ERRNOS:
            return ENVIRONMENT_ERRNOS[int(number)]
    match = _ENVIRONMENT_TEXT.search(text)
    return match.group(0).lower() if match else ""


def environment_cause(error: BaseException) -> str:
    """The machine failure an exception reports (from its errno or its text), or ''."""
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
        return ENVIRONMENT_ERRNOS[error.errno]
    return environment_cause_of_text(str(error))


def environment_evidence(log_path: str | Path) -> str:
    """The first line of the end of a program's log that reports a machine failure, or ''."""
    try:
        with open(log_path, "rb") as log:
            log.seek(max(0, os.path.getsize(log_path) - LOG_TAIL_BYTES))
            tail = log.read().decode(errors="replace")
    except OSError:
        return ""
    for line in tail.splitlines():
        if environment_cause_of_text(line):
            return " ".join(line.split())
    return ""


def unwritable_cause(directory: str | Path) -> str:
    """Why ``directory`` cannot take a small file (a :data:`PROBE_BYTES` write, flushed to disk),
    e.g. "no space left on device"; '' when it can, or when the failure is not the machine's."""
    try:
        handle, name = tempfile.mkstemp(prefix=".xasflow-probe.", dir=directory)
    except OSError as error:
        return environment_cause(error)
    try:
        with os.fdopen(handle, "wb") as probe:
            probe.write(bytes(PROBE_BYTES))
            probe.flush()
            os.fsync(probe.fileno())  # network filesystems report a full disk only here
    except OSError as error:
        return environment_cause(error)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
    return ""


def require_writable(directory: str | Path, program: str) -> None:
    """Raise :class:`EnvironmentFailure` if ``directory`` cannot take a small file.

    Called before a failed calculation is recorded as a physics failure: a program that could
    not write its output fails for the machine's reasons, whatever it printed.
    """
    cause = unwritable_cause(directory)
    if cause:
        raise EnvironmentFailure(
            f"{directory}: {program} failed and the directory cannot be written ({cause}); "
            "free space or fix permissions there and rerun"
        )


@contextlib.contextmanager
def environment_guard(place: str | Path, doing: str) -> Iterator[None]:
    """Turn an ``OSError`` that reports a machine failure into :class:`EnvironmentFailure`
    naming the file (or ``place``), what was being done, and the cause; others pass through."""
    try:
        yield
    except EnvironmentFailure:
        raise
    except OSError as error:
        cause = environment_cause(error)
        if not cause:
            raise
        where = error.filename or place
        raise EnvironmentFailure(
            f"{where}: {cause} while {doing}; free space or fix permissions there and rerun"
        ) from error


def run_program(launch: ProgramLaunch, directory: str | Path, time_limit: float, log_name: str) -> ProgramRun:
    """Run ``launch.command`` in ``directory`` (its working directory) for at most ``time_limit`` s.

    stdout and stderr go to ``directory / log_name``, stdin is ``/dev/null``; the program runs
    in a new session, and at the time limit its whole process group is stopped (SIGTERM, then
    SIGKILL after ``launch.grace_seconds``). Processes the program leaves behind in its group
    when it exits are stopped the same way, and so is the group when this process is
    interrupted (KeyboardInterrupt, or SIGTERM while it has its default action).

    Returns how the run ended; a failing program is not an error here. Raises
    :class:`EnvironmentFailure` when the program cannot be started (missing, not executable)
    or the log cannot be written, and when a failing program's log (or its death by SIGXFSZ)
    shows that the machine made it fail.
    """
    directory = Path(directory)
    log_path = directory / log_name
    logger.debug("running %s in %s (time limit %g s)", launch.command, directory, time_limit)
    started = time.perf_counter()
    with (
        environment_guard(log_path, f"writing the log of {launch.program}"),
        open(log_path, "wb") as log,
        _termination_as_exit(),
    ):
        process = _start(launch, directory, log)
        timed_out = False
        try:
            returncode = process.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            timed_out, returncode = True, None
            _stop_group(process, launch.grace_seconds)
            log.write(f"\nxasflow: stopped {launch.program} at the time limit of {time_limit:g} s\n".encode())
        except BaseException:  # KeyboardInterrupt, SIGTERM of a cancelled job: leave nothing running
            _stop_group(process, launch.grace_seconds)
            raise
        else:
            if _group_has_live_members(process.pid):
                logger.warning("%s left processes running in %s; stopping them", launch.program, directory)
                _stop_group(process, launch.grace_seconds)
    run = ProgramRun(returncode, timed_out, time.perf_counter() - started, log_path)
    if returncode:
        _raise_for_environment(launch, directory, run)
    return run


@contextlib.contextmanager
def _termination_as_exit() -> Iterator[None]:
    """While a program runs, SIGTERM to this process (a job being cancelled) raises SystemExit
    instead of ending the process at once, so the program's own process group, which no longer
    receives the signals of ours, is stopped on the way out. Only in the main thread and where
    SIGTERM still has its default action; the previous action is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signal_number, frame):
        raise SystemExit(128 + signal_number)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(launch: ProgramLaunch, directory: Path, log) -> subprocess.Popen:
    try:
        return subprocess.Popen(
            list(launch.command),
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the time limit stops its children too
        )
    except OSError as error:  # missing program, not executable, bad interpreter line
        program = error.filename or launch.command[0]
        message = (
            f"{directory}: cannot start {launch.program} '{program}' "
            f"({error.strerror or error}); install it or fix the command {list(launch.command)}"
        )
        log.write(f"xasflow: {message}\n".encode())
        raise EnvironmentFailure(message) from error


def _raise_for_environment(launch: ProgramLaunch, directory: Path, run: ProgramRun) -> None:
    if run.returncode == -signal.SIGXFSZ:
        evidence = "killed by SIGXFSZ, file size limit exceeded"
    else:
        evidence = environment_evidence(run.log_path)
    if evidence:
        raise EnvironmentFailure(
            f"{directory}: {launch.program} exited with code {run.returncode} because of the machine "
            f"({evidence!r} in {run.log_path.name}); free space or fix permissions there and rerun"
        )


def _group_has_live_members(group: int) -> bool:
    """Whether a process group still has a process that is not a zombie.

    Zombies are left out because a container's init may never reap them. Without ``/proc``
    (macOS) any member counts.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        state, process_group = fields[0], int(fields[2])
        if process_group == group and state not in ("Z", "X"):
            return True
    return False


def _stop_group(process: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM to the process group of ``process``, SIGKILL to what remains after the grace period."""
    group = process.pid  # start_new_session: the group id is the leader's pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so it does not count as alive
        if not _group_has_live_members(group):
            break
        time.sleep(POLL_SECONDS)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
    process.wait()

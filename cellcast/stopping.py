"""How a `cellcast` process stops when it is told to: SIGTERM (a scheduler, systemd, a pod stop, a CI timeout),
SIGINT (Ctrl-C) or SIGHUP (the terminal closed).

Left to Python's defaults, SIGTERM and SIGHUP end the process on the spot: no `finally`, no context manager's exit,
no atexit handler runs, so whatever the command started lives on as an orphan (Prefect's temporary API server, which
Prefect stops from atexit; worker processes; a Dask cluster). Here each becomes an exception raised in the main
thread, the way SIGINT becomes KeyboardInterrupt: the command unwinds as it does on an error (Prefect marks its flow
run Crashed, the training lock is released, half-written files are removed), `friendly` prints one line and the
process exits with 128 + the signal's number (130 SIGINT, 143 SIGTERM, 129 SIGHUP), running atexit on the way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

# SIGINT keeps Python's own handler (KeyboardInterrupt, which libraries already unwind on)
HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """Raised in the main thread when the process gets SIGTERM or SIGHUP. A BaseException, as KeyboardInterrupt:
    `except Exception` blocks (a retry, an error turned into a report) must not swallow a stop."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + signum


def stop_of(exc: BaseException) -> int | None:
    """The signal behind `exc`, or None for an error of its own: Stopped, KeyboardInterrupt (SIGINT), Prefect's
    TerminationSignal (its handler's SIGTERM while a flow runs), or an exception raised while one of these unwound
    (a SIGTERM that lands while Prefect starts a task run surfaces as Prefect's ValueError "Task run is not set")."""
    # Prefect's exception class only where Prefect was imported: no flow ran otherwise
    termination = getattr(sys.modules.get("prefect.exceptions"), "TerminationSignal", None)
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, Stopped):
            return e.signum
        if isinstance(e, KeyboardInterrupt):
            return signal.SIGINT
        if termination is not None and isinstance(e, termination):
            return int(e.signal)
        e = e.__cause__ or e.__context__
    return None


_stopping = False


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A handler, not SIG_IGN: processes started later would inherit SIG_IGN through exec."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    global _stopping
    # once: a second signal while the command unwinds (Prefect reporting the crash, its server being stopped at
    # exit) must not cut that short and leave the orphans the first one is meant to prevent
    _stopping = True
    for s in HANDLED:
        if signal.getsignal(s) is _raise_stopped:  # not a handler someone put in front (uvicorn's, Prefect's)
            signal.signal(s, _ignore)
    raise Stopped(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Stopped in the main thread while the block runs (the command's whole life); the
    previous handlers come back afterwards, unless it stopped. Prefect's flow engine puts its own SIGTERM handler in
    front of this one while a flow runs: it marks the run Crashed, then re-sends the signal, which lands here."""
    # a signal ignored when the process started stays ignored (`nohup cellcast train ...` outlives its terminal)
    saved = {s: signal.signal(s, _raise_stopped) for s in HANDLED if signal.getsignal(s) == signal.SIG_DFL}
    try:
        yield
    finally:
        if not _stopping:  # stopping: the signals stay ignored until the process is gone (atexit still to run)
            for s, h in saved.items():
                signal.signal(s, h)


# what a stop leaves, by command (docs/operations.md "Stopping a command"); the rest: DEFAULT_NOTE
NOTES = {
    "train": "the epochs trained so far are kept as checkpoints, which a rerun resumes from",
    "run": "the epochs trained so far are kept as checkpoints, which a rerun resumes from",
    "backtest": "the previous report stays; a rerun trains every fold again",
    "serve": "requests in flight were answered first",
    "ui": "the MLflow UI's processes ended with it",
}
DEFAULT_NOTE = "no file is left half-written"


def stopped_line(signum: int, command: str) -> str:
    """The one line a stopped command prints last."""
    note = NOTES.get(command, DEFAULT_NOTE)
    return f"stopped by {signal.Signals(signum).name}: `cellcast {command}` shut down what it started; {note}"


def run_foreground(cmd: list[str], env: dict[str, str] | None = None, grace_s: float = 30.0) -> int:
    """Run `cmd` until it exits and return its exit code; stopped meanwhile (Stopped, Ctrl-C), SIGTERM goes to its
    whole process group and the stop goes on once they all ended (SIGKILL after `grace_s`). A server such as
    `mlflow ui` runs its workers under a process of their own: subprocess.call would SIGKILL only the command it
    started and leave those running."""
    proc = subprocess.Popen(cmd, env=env, process_group=0)  # a group of its own: its children are reached too
    try:
        return proc.wait()
    except BaseException:
        _end_group(proc, grace_s)
        raise


def _end_group(proc: subprocess.Popen, grace_s: float) -> None:
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + grace_s
    while _group_running(proc) and time.monotonic() < end:
        time.sleep(0.2)
    if _group_running(proc):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def _group_running(proc: subprocess.Popen) -> bool:
    """Whether a process of `proc`'s group still runs. An exited process whose parent is gone waits as a zombie
    for init to reap it, and a container's init may never do: /proc tells it apart where there is one."""
    proc.poll()  # reaps the group's leader
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc_dir.glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, the fields after it do not
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == proc.pid and fields[0] != "Z":
            return True
    return False


@contextmanager
def hangup_as_terminate() -> Iterator[None]:
    """SIGHUP handled as SIGTERM is at the time, for a block that runs an event loop (`cellcast serve`): an
    exception raised by a signal handler inside the loop is logged by the loop and lost, while uvicorn's own
    SIGTERM handler closes the port, answers the requests in flight and re-raises the signal afterwards, which then
    comes back here and stops the command."""

    def forward(signum: int, frame: FrameType | None) -> None:
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler) and handler is not forward:
            handler(signum, frame)

    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:  # nohup: SIGHUP is not a stop
        yield
        return
    saved = signal.signal(signal.SIGHUP, forward)
    try:
        yield
    finally:
        if not _stopping:
            signal.signal(signal.SIGHUP, saved)

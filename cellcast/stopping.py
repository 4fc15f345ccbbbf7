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
import socket
import subprocess
import sys
import threading
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


_stopping = False  # a stop is unwinding the command: Stopped was raised
_received: int | None = None  # the stop signal this process got, whichever handler took it
_unwinding = threading.Event()

# A stop whose exception is lost is delivered again after this long, a few times. Lost: raised while the main thread
# ran a `__del__` or a weakref callback (Python prints "Exception ignored" and goes on), or inside an asyncio task
# nobody awaits, or caught by a library's bare `except:`. The handler has run, and the command would go on to the end
# of its work as if never told to stop (seen once in CI: a SIGTERM during validation, the training ran to its end).
REDELIVER_AFTER_S = 10.0
REDELIVERIES = 3


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A handler, not SIG_IGN: processes started later would inherit SIG_IGN through exec."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    global _stopping, _received
    # once: a second signal while the command unwinds (Prefect reporting the crash, its server being stopped at
    # exit) must not cut that short and leave the orphans the first one is meant to prevent
    _stopping = True
    _received = _received or signum
    _unwinding.set()
    for s in HANDLED:
        if signal.getsignal(s) is _raise_stopped:  # not a handler someone put in front (uvicorn's, Prefect's)
            signal.signal(s, _ignore)
    raise Stopped(signum)


def _redeliverable(handler: object) -> bool:
    """Handlers whose exception is the stop: this module's, and Prefect's flow-run bridge (TerminationSignal, which
    Prefect turns into this module's Stopped once the flow run is marked Crashed). Not a handler of a graceful
    shutdown (uvicorn's): a second signal there means "now", and cuts short the requests in flight."""
    prefect_bridge = getattr(sys.modules.get("prefect.utilities.engine"), "_prefect_sigterm_handler", None)
    return handler is _raise_stopped or (prefect_bridge is not None and handler is prefect_bridge)


def _redeliver(signum: int) -> None:
    """Until the stop unwinds the command, the signal again every REDELIVER_AFTER_S, while a handler whose
    exception is the stop takes it. A signal not yet handled (the main thread inside a long C call) is only
    raised again, to the same effect."""
    sent = 0
    while sent < REDELIVERIES:
        if _unwinding.wait(REDELIVER_AFTER_S) or not _redeliverable(signal.getsignal(signum)):
            return
        if _main_thread_handles_a_stop():  # Prefect marking its runs Crashed: the stop is on its way
            continue
        os.kill(os.getpid(), signum)
        sent += 1


def _main_thread_handles_a_stop() -> bool:
    """Whether the main thread is inside an `except` (or `finally`) block handling a stop: unwinding, slowly."""
    handled = sys._current_exceptions().get(threading.main_thread().ident or -1)
    exc = handled[1] if isinstance(handled, tuple) else handled  # (type, value, tb) before Python 3.12
    return isinstance(exc, BaseException) and stop_of(exc) is not None


class _Arrivals:
    """Which signals reach the process, read in a thread of its own from the wakeup fd Python's C-level handler
    writes each signal's number to before any Python handler runs: a stop is known here even when the
    exception its handler raised is lost (REDELIVER_AFTER_S), or when the handler in front (Prefect's) took it."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        self._previous = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        if self._previous != -1:  # someone reads the signals already (an event loop): leave it theirs
            signal.set_wakeup_fd(self._previous)
        self.active = self._previous == -1
        self._thread = threading.Thread(target=self._watch, name="cellcast-signals", daemon=True)
        if self.active:
            self._thread.start()
            os.register_at_fork(after_in_child=self.forget_in_child)

    def _watch(self) -> None:
        global _received
        while data := self._read.recv(64):
            for signum in data:
                # a stop where the handler's exception is one; not a signal a server takes its own way (uvicorn's
                # supervisor restarts its workers on SIGHUP)
                if signum in HANDLED and _received is None and _redeliverable(signal.getsignal(signum)):
                    _received = signum
                    threading.Thread(target=_redeliver, args=(signum,), name="cellcast-stop", daemon=True).start()

    def forget_in_child(self) -> None:
        """In a child forked from this process (a worker, a data loader): the wakeup fd is process state fork
        copies, and the child's signals (its stop by the parent) would reach the parent's watcher as its own."""
        if self.active:
            now = signal.set_wakeup_fd(-1)
            if now != self._write.fileno():
                signal.set_wakeup_fd(now)

    def close(self) -> None:
        if self.active:
            now = signal.set_wakeup_fd(-1)
            if now not in (-1, self._write.fileno()):
                signal.set_wakeup_fd(now)  # an event loop's own, set meanwhile: theirs, left as it is
        self._write.close()  # the watching thread reads the end of the pair and returns
        if self.active:
            self._thread.join(timeout=1)
        self._read.close()
        self.active = False  # a later fork has nothing of this to forget


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Stopped in the main thread while the block runs (the command's whole life); the
    previous handlers come back afterwards, unless it stopped. Prefect's flow engine puts its own SIGTERM handler in
    front of this one while a flow runs: it marks the run Crashed, then re-sends the signal, which lands here.
    A stop whose exception was lost is delivered again (REDELIVER_AFTER_S), and a block that ends as if no stop
    came, after one did, raises it at its end: the command exits as stopped, not as done."""
    # a signal ignored when the process started stays ignored (`nohup cellcast train ...` outlives its terminal)
    saved = {s: signal.signal(s, _raise_stopped) for s in HANDLED if signal.getsignal(s) == signal.SIG_DFL}
    # the wakeup fd is the main thread's to set, as the handlers are
    arrivals = _Arrivals() if saved and threading.current_thread() is threading.main_thread() else None
    try:
        yield
        if _received is not None:
            raise Stopped(_received)
    finally:
        if arrivals is not None:
            arrivals.close()
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

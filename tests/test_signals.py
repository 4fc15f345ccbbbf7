"""A `cellcast` process stopped by a signal (a scheduler's SIGTERM, Ctrl-C) leaves nothing it started running: not
the temporary Prefect server Prefect starts for a flow when no PREFECT_API_URL is set, not a worker. It exits
128 + the signal's number with one line saying so (docs/operations.md "Stopping a command")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import typer
from conftest import one_cell
from prefect_server import prefect_env

from cellcast.commands import friendly
from cellcast.stopping import Stopped, run_foreground, stop_of, stop_on_signals

SERVER = "prefect.server.api.server:create_app"  # the temporary server's uvicorn command line


def _wait_for(what, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    end = time.monotonic() + timeout
    while not what():
        if proc.poll() is not None:
            pytest.fail(f"cellcast exited {proc.returncode} before it was stopped:\n{log.read_text()[-3000:]}")
        if time.monotonic() > end:
            pytest.fail(f"not seen within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _running(p: psutil.Process) -> bool:
    """Not a zombie: an exited child whose parent is gone waits for this machine's init to reap it, holding no
    port and no memory."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:200]}"
    except psutil.Error:
        return str(p.pid)


def _stop_in_flow(project: Path, signum: int) -> tuple[int, str, list[psutil.Process]]:
    """`cellcast train` in a session of its own on an ephemeral Prefect server (a PREFECT_HOME of its own, no
    PREFECT_API_URL); once its flow run began, `signum` to the command's process alone (as `kill PID` or pkill
    would: not to its group). Returns its exit code, its output and the processes it had started, which are
    killed here afterwards whatever the test found (a failing run must not leave them to the next test)."""
    env = {**os.environ, **prefect_env(project / "prefect"), "PREFECT_LOGGING_LEVEL": "INFO"}
    env.pop("PREFECT_API_URL", None)
    log = project / "cellcast.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cellcast", "train", "elecdemand"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    me = psutil.Process(proc.pid)
    tree: list[psutil.Process] = []
    try:
        # the server up (its process a child of the command) and the flow run inside a task (validate, seconds of
        # Great Expectations): Prefect's engine handles SIGTERM itself while a flow runs, and that is where the
        # server used to be left behind. (A signal as a task run starts takes another way out of Prefect.)
        _wait_for(lambda: "Task run 'ingest-" in log.read_text(), 300, proc, log)
        time.sleep(1)
        tree = me.children(recursive=True)
        assert any(SERVER in " ".join(p.cmdline()) for p in tree), [p.cmdline() for p in tree]
        os.kill(proc.pid, signum)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 60 s after {signal.Signals(signum).name}:\n{log.read_text()[-3000:]}")
        # Prefect's atexit stop waits up to 5 s for its server before killing it: the command's exit covers it
        _, alive = psutil.wait_procs(tree, timeout=2)
        return code, log.read_text(), [p for p in alive if _running(p)]
    finally:
        for p in [me, *tree]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_a_stopped_train_leaves_no_process_behind(project, tiny_params, signum):
    one_cell(tiny_params)
    code, out, alive = _stop_in_flow(project, signum)
    name = signal.Signals(signum).name
    assert not alive, f"left running after {name}: {[_describe(p) for p in alive]}"
    assert code == 128 + signum, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith(f"stopped by {name}: `cellcast train`")]
    assert len(lines) == 1, out[-3000:]


def test_a_stop_exits_with_its_signal_and_one_line(capsys):
    @friendly
    def train():
        raise Stopped(signal.SIGHUP)

    @friendly
    def ingest():
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as hup:
        train()
    with pytest.raises(typer.Exit) as ctrl_c:
        ingest()
    assert (hup.value.exit_code, ctrl_c.value.exit_code) == (129, 130)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("stopped by SIGHUP: `cellcast train` shut down what it started; the epochs"), lines
    assert lines[1].startswith("stopped by SIGINT: `cellcast ingest` shut down what it started; no file"), lines


def _raised_while(first: BaseException) -> BaseException:
    """A ValueError raised in the handler of `first` (its __context__)."""
    try:
        try:
            raise first
        except BaseException:
            raise ValueError("Task run is not set")  # noqa: B904  (no `from`: the implicit context is the point)
    except ValueError as e:
        return e


def test_an_error_raised_while_a_stop_unwinds_is_the_stop():
    assert stop_of(_raised_while(Stopped(signal.SIGHUP))) == signal.SIGHUP
    assert stop_of(_raised_while(KeyboardInterrupt())) == signal.SIGINT
    assert stop_of(ValueError("an error of its own")) is None


@pytest.mark.integration  # imports Prefect (2 s)
def test_prefects_termination_signal_is_a_stop():
    """Prefect's handler turns SIGTERM into its TerminationSignal while a flow runs; landing as a task run starts,
    Prefect's clean-up then raises a ValueError from it: the command still reads it as the stop."""
    from prefect.exceptions import TerminationSignal

    assert stop_of(_raised_while(TerminationSignal(signal.SIGTERM))) == signal.SIGTERM

    @friendly
    def train():
        raise _raised_while(TerminationSignal(signal.SIGTERM))

    with pytest.raises(typer.Exit) as stopped:
        train()
    assert stopped.value.exit_code == 143


@pytest.fixture
def as_a_process_starts(monkeypatch):
    """This module's stop state fresh and SIGTERM/SIGHUP at their defaults, as a `cellcast` process starts; the
    test process's own handlers back afterwards."""
    import cellcast.stopping as stopping

    saved = {s: signal.getsignal(s) for s in stopping.HANDLED}
    monkeypatch.setattr(stopping, "_stopping", False)
    monkeypatch.setattr(stopping, "_received", None)
    monkeypatch.setattr(stopping, "_unwinding", threading.Event())
    monkeypatch.setattr(stopping, "REDELIVER_AFTER_S", 0.3)
    try:
        for sig in stopping.HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        yield stopping
    finally:
        stopping._unwinding.set()  # a redelivery still waiting gives up
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _sleep_through(seconds: float) -> None:
    """Sleep in steps: a signal's handler runs between two of them."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)


def test_sigterm_raises_in_the_main_thread_and_a_second_one_is_dropped(as_a_process_starts):
    with pytest.raises(Stopped) as stop:
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here, at once
    assert stop.value.signum == signal.SIGTERM
    # unwinding: a second SIGTERM is taken and dropped, not the default death
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)


def test_a_stop_whose_exception_was_swallowed_still_ends_the_command_stopped(as_a_process_starts):
    """A handler's exception raised inside a `__del__`, a weakref callback or a library's bare `except:` is lost,
    and the command goes on: it must not then exit 0 as if it had finished unasked."""
    swallowed = []
    with pytest.raises(Stopped) as stop:
        with stop_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGHUP)
                _sleep_through(5)
            except BaseException as e:  # noqa: BLE001  (the library that loses it)
                swallowed.append(e)
            _sleep_through(0.5)  # its own handler ignores a redelivery: the stop is already under way
    assert [type(e) for e in swallowed] == [Stopped]
    assert stop.value.signum == signal.SIGHUP


def test_a_forked_childs_stop_is_not_its_parents(as_a_process_starts):
    """A worker forked from the command and stopped by it: its SIGTERM must not reach the command's own watch (the
    wakeup fd is process state fork copies) and end a finished command as stopped."""
    with stop_on_signals():
        pid = os.fork()
        if pid == 0:  # the child: stopped as a worker is
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                _sleep_through(5)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        _sleep_through(0.5)  # what the watch would have read, read
    assert os.waitstatus_to_exitcode(status) == 0
    assert as_a_process_starts._received is None


@pytest.mark.integration  # imports Prefect (2 s)
def test_a_stop_lost_while_prefects_handler_is_in_front_is_delivered_again(as_a_process_starts):
    """While a flow runs, Prefect's SIGTERM handler stands in front of the command's: its TerminationSignal, lost
    once, comes again; this time it unwinds the flow, and the command stops with its own Stopped."""
    from prefect.exceptions import TerminationSignal
    from prefect.utilities.engine import capture_sigterm

    raised = []
    with pytest.raises(Stopped) as stop:
        with stop_on_signals():
            with capture_sigterm():  # the flow engine's, around a flow run
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    _sleep_through(5)
                except TerminationSignal as e:
                    raised.append(e)  # lost
                try:
                    _sleep_through(5)  # the flow goes on ... until the stop comes again
                except TerminationSignal as e:
                    raised.append(e)
                    raise
    assert len(raised) == 2
    assert stop.value.signum == signal.SIGTERM


@pytest.mark.integration  # processes (sh, sleep): a second
def test_a_stop_ends_the_whole_group_of_a_foreground_command(tmp_path):
    """`cellcast ui --start` runs the MLflow UI, whose server runs under a process of its own: a stop ends them all."""
    pids = tmp_path / "pids"

    def stop_soon(signum, frame):
        raise Stopped(signal.SIGTERM)

    saved = signal.signal(signal.SIGALRM, stop_soon)
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with pytest.raises(Stopped):
            run_foreground(["sh", "-c", f"sleep 60 & echo $! > {pids}; wait"], grace_s=10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, saved)
    child = int(pids.read_text())
    assert not psutil.pid_exists(child) or not _running(psutil.Process(child)), "the command's child lives on"


def test_while_serving_sighup_takes_the_way_sigterm_takes():
    """uvicorn's SIGTERM handler shuts the service down gracefully; SIGHUP goes to it too (an exception raised by a
    signal handler inside the event loop would be logged and lost)."""
    from cellcast.stopping import hangup_as_terminate

    got: list[int] = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with hangup_as_terminate():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
        assert got == [signal.SIGHUP]
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_a_signal_ignored_at_start_stays_ignored():
    """`nohup cellcast train ...`: SIGHUP is ignored when the process starts, and the command must outlive its
    terminal as it did."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with stop_on_signals():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)

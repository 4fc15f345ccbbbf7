"""The `cellcast` command. Each command calls library functions; user errors print one line, exit 2."""

from __future__ import annotations

import logging
import os
import sys

import typer

from cellcast.commands import friendly as friendly  # the commands of other modules import it from here
from cellcast.stopping import stop_on_signals


class _Command(typer.Typer):
    """The `cellcast` process: SIGTERM and SIGHUP unwind it as Ctrl-C does (cellcast/stopping.py), so what a command
    started (Prefect's temporary server, worker processes, a cluster) stops with it. Only the real process: typer's
    CliRunner (the tests) builds the command without calling this, and leaves the test process's handlers alone."""

    def __call__(self, *args, **kwargs):
        with stop_on_signals():
            return super().__call__(*args, **kwargs)


app = _Command(
    help="cellcast: time series in, RNN / LSTM / GRU forecasts out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted (not the one at start-up)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # cellcast's own loggers only: Prefect configures its loggers itself, and a root handler would
    # echo every Prefect line twice and flood the terminal with GX and alembic chatter.
    log = logging.getLogger("cellcast")
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    # an error raised inside a flow reaches `friendly`, which prints it as the last line: Prefect's own
    # copies of it (task failed, flow failed, each state change) would repeat it four times
    from cellcast.flows import UserErrorLog

    UserErrorLog.quiet = not verbose


def _register_commands() -> None:
    import importlib

    for module in ("data", "training", "registry", "serving", "monitoring", "system"):
        importlib.import_module(f"cellcast.commands.{module}").register(app)


_register_commands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

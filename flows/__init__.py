"""Prefect flows: thin orchestration over `pipeline`. Importing this package sets the Prefect
defaults cellcast relies on (no analytics; a server start-up timeout that holds on 2 cores), and
keeps a user's error (a CellcastError: bad file, server down) to one line in the run logs."""

import logging
import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")

RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class UserErrorLog(logging.Filter):
    """Prefect logs a failed task or flow with the exception's traceback. For a CellcastError the message
    is the whole story: the traceback goes. `quiet` (set by the CLI, which prints the error itself as its
    last line) drops Prefect's copies of that message too."""

    quiet = False

    @staticmethod
    def _names() -> set[str]:
        from cellcast.pipeline.errors import CellcastError

        out, todo = set(), [CellcastError]
        while todo:
            c = todo.pop()
            out.add(c.__name__)
            todo.extend(c.__subclasses__())
        return out

    def filter(self, record: logging.LogRecord) -> bool:
        from cellcast.pipeline.errors import CellcastError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, CellcastError):
            if self.quiet:
                return False
            record.exc_info, record.exc_text = None, None
            return True
        if self.quiet and "Failed(" in str(record.msg):
            text = record.getMessage()
            # "Task run encountered an exception X: ..." / "Flow run encountered an exception: X: ..."
            if any(f"exception {n}: " in text or f"exception: {n}: " in text for n in self._names()):
                return False
        return True


def _install() -> None:
    # the library logs under `cellcast.*`; a process that runs flows without the CLI (a deployment served
    # by flows.deploy, a Dask worker) would drop its INFO lines at the root logger's WARNING
    lib = logging.getLogger("cellcast")
    if lib.level == logging.NOTSET:
        lib.setLevel(logging.INFO)
    for name in RUN_LOGGERS:
        lg = logging.getLogger(name)
        if not any(isinstance(f, UserErrorLog) for f in lg.filters):
            lg.addFilter(UserErrorLog())


_install()

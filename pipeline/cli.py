"""The `cellcast` command. Each command calls library functions; user errors print one line, exit 2."""
from __future__ import annotations

import functools
import sys

import typer

from .errors import CellcastError

app = typer.Typer(help="cellcast: time series in, RNN / LSTM / GRU forecasts out.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def friendly(fn):
    """Print a CellcastError as one line on stderr and exit with its code, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CellcastError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(e.exit_code)

    return wrapper


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

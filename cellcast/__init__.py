"""cellcast: the `cellcast` command, above the library and the flows.

    cellcast            the command-line interface (this folder): parses options, prints results
    cellcast.flows      Prefect flows (folder flows/): which library step runs, in what order, with what retries
    cellcast.pipeline   the library (folder pipeline/): every step as plain functions on plain data

Installed, `pipeline/` and `flows/` live inside this package (pyproject.toml maps them), so the
distribution claims one top-level name, `cellcast`, not the generic `pipeline` and `flows`.
In a source checkout that is not installed (a GPU machine that was sent the tree), they are found
beside this folder.
"""

from pathlib import Path as _Path

_here = _Path(__file__).resolve().parent
_checkout = _here.parent
if (
    not (_here / "pipeline").is_dir()
    and (_checkout / "pipeline" / "__init__.py").is_file()
    and str(_checkout) not in __path__
):  # noqa: F821 - the package's own search path
    __path__.append(str(_checkout))  # noqa: F821

from .pipeline import __version__  # noqa: E402

__all__ = ["__version__"]

"""cellcast: the `cellcast` command, above the library and the flows.

    cellcast            the command-line interface (this folder): parses options, prints results
    cellcast.flows      Prefect flows (folder flows/): which library step runs, in what order, with what retries
    cellcast.pipeline   the library (folder pipeline/): every step as plain functions on plain data

Installed, `pipeline/` and `flows/` live inside this package (pyproject.toml maps them), so the
distribution claims one top-level name, `cellcast`, not the generic `pipeline` and `flows`.
In a source checkout that is not installed (a GPU machine that was sent the tree), those two folders, and only
those, are found beside this one by a last-resort import finder (the checkout's tests/, bench/ and docs/ never
become `cellcast.*` packages).
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path as _Path

_CHECKOUT = _Path(__file__).resolve().parent.parent
_MAPPED = {"cellcast.pipeline": "pipeline", "cellcast.flows": "flows"}


class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds cellcast.pipeline and cellcast.flows in the checkout when no installed copy answered first."""

    def find_spec(self, fullname, path, target=None):
        folder = _MAPPED.get(fullname)
        init = _CHECKOUT / folder / "__init__.py" if folder else None
        if init is None or not init.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


if not any(isinstance(f, _CheckoutFinder) for f in sys.meta_path):
    sys.meta_path.append(_CheckoutFinder())  # last: an installed (or editable) cellcast is found first

from .pipeline import __version__  # noqa: E402  (after the finder: a bare checkout needs it)

__all__ = ["__version__"]

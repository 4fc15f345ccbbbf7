"""The two test tiers (tests/README.md): a test that starts a server, a cluster or a browser, or runs a Prefect flow,
is marked `integration`. The helpers that start such things call `require_integration` first, so a test that
forgets the marker fails at once instead of slowing the quick tier."""

from __future__ import annotations

import os

ENV = "CELLCAST_TEST_INTEGRATION"  # set by tests/conftest.py before each test's fixtures are made


def require_integration(what: str) -> None:
    if os.environ.get(ENV) == "0":
        raise RuntimeError(
            f"this test starts {what}: mark it @pytest.mark.integration (tests/README.md), "
            "or keep it in the quick tier without it"
        )

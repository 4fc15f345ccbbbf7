"""pyproject.toml as the build backend reads it: no deprecation banner on every install."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # a TOML table makes setuptools >= 77 print a deprecation banner at each of the three build hooks
    assert isinstance(meta["project"]["license"], str) and meta["project"]["license"] == "Apache-2.0"
    setuptools = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    assert len(setuptools) == 1
    low = re.search(r">=\s*(\d+)", setuptools[0])
    assert low and int(low.group(1)) >= 77, f"an SPDX license string needs setuptools>=77, got {setuptools[0]}"

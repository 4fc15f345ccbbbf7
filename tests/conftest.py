"""Shared fixtures: keep them small and general."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A throwaway project folder holding a copy of params.yaml, made the working directory
    (every path in params.yaml is relative to it)."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CELLCAST_PARAMS", raising=False)
    return tmp_path


@pytest.fixture
def settings_for(project):
    """settings_for(name, ingest={...}, window={...}, validate={...}): Settings with section overrides."""
    from pipeline.config import load_params

    def make(name: str, **sections):
        s = load_params(project / "params.yaml").for_dataset(name)
        update = {}
        for section, values in sections.items():
            attr = "validate_" if section == "validate" else section
            update[attr] = getattr(s, attr).model_copy(update=values)
        return s.model_copy(update=update)

    return make

"""Typed params.yaml: overrides per dataset, one-line errors naming the key."""

import re
from pathlib import Path

import pytest

from cellcast.pipeline.config import Params, load_params
from cellcast.pipeline.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_the_repository_params_load_and_every_bundled_dataset_resolves():
    from cellcast.pipeline.data.datasets import list_datasets

    p = load_params()
    bundled = [d.name for d in list_datasets()]
    assert len(bundled) >= 6
    # every override names a dataset that exists (a typo would silently configure nothing)
    assert set(p.datasets) <= set(bundled), f"overrides for unknown datasets: {set(p.datasets) - set(bundled)}"
    for name in [*bundled, "someone-elses"]:
        s = p.for_dataset(name)
        assert s.dataset == name and s.model_name == f"{name}-forecaster"


def test_dataset_overrides_apply_to_their_dataset_only():
    p = Params(window={"lookback": 10}, datasets={"a": {"window": {"lookback": 99}, "train": {"epochs": 3}}})
    assert p.for_dataset("a").window.lookback == 99 and p.for_dataset("a").train.epochs == 3
    assert p.for_dataset("b").window.lookback == 10
    assert p.for_dataset("a").fingerprint() != p.for_dataset("b").fingerprint()


@pytest.mark.parametrize(
    "text,needle",
    [
        ("train:\n  epochs: many\n", "params.yaml: train.epochs: Input should be a valid integer"),
        ("train:\n  cells: [rnn, transformer]\n", "train.cells.1"),
        ("trian:\n  epochs: 3\n", "trian: Extra inputs are not permitted"),
        ("window:\n  lookback: -4\n", "window.lookback"),
        ("datasets:\n  x:\n    registry: {retries: 1}\n", "datasets.x.registry: not a section that can be"),
        ("datasets:\n  x:\n    serve: {canary: 1.5}\n", "datasets.x.serve.canary"),
        ("datasets:\n  x:\n    window: {horizon: zero}\n", "datasets.x.window.horizon"),
        ("train: [1, 2\n", "not valid YAML"),
        # settings that could not build, train or serve a model: refused before any work starts
        ("train:\n  hidden_size: 0\n", "train.hidden_size: 0 is not a positive size"),
        ("train:\n  num_layers: [1, 0]\n", "train.num_layers: 0 is not a positive size"),
        ("train:\n  hidden_size: []\n", "train.hidden_size: an empty list trains nothing"),
        ("train:\n  cells: []\n", "train.cells: List should have at least 1 item"),
        ("evaluate:\n  seasons: [24, 0]\n", "evaluate.seasons.1: Input should be greater than or equal to 1"),
        (
            "window:\n  lookback: 600000\n",
            "params.yaml: window.lookback: 600000 steps cannot fit in a forecast request "
            "of serve.max_body_bytes 1048576",
        ),
        ("datasets:\n  x:\n    window: {lookback: 600000}\n", "datasets.x: window.lookback: 600000 steps cannot fit"),
        ("- a\n- b\n", "must be a mapping"),
        ("evaluate:\n  references: [mstl, theta, mstl]\n", "evaluate.references: 'mstl' is listed more than once"),
        ("ingest:\n  future_features: [WorkDay, WorkDay]\n", "'WorkDay' is listed more than once"),
        ("train:\n  anchor: theta\n  residual: false\n", "anchor 'theta' needs residual: true"),
        ("train:\n  anchor_theta_alphas: [0.3, 1.5]\n", "train.anchor_theta_alphas.1: Input should be less than or"),
        ("train:\n  anchor_theta_alphas: []\n", "train.anchor_theta_alphas: List should have at least 1 item"),
    ],
)
def test_a_bad_params_file_is_one_line_naming_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load_params(write(tmp_path, text))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg, msg
    assert str(tmp_path / "params.yaml") in msg


@pytest.mark.parametrize(
    "text,needle",
    [
        ("ingest:\n  min_test_windows: 5\n", "ingest.min_test_windows: renamed to ingest.min_test_horizons"),
        ("evaluate:\n  min_test_windows: 10\n", "evaluate.min_test_windows: renamed to evaluate.min_decision_paths"),
    ],
)
def test_a_renamed_setting_names_its_new_name(tmp_path, text, needle):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_params(p)


def test_the_defaults_are_the_recipe_and_the_bundled_overrides_only_facts():
    """A file brought by a user gets what the bundled datasets get: the recipe lives in the defaults, the datasets'
    overrides say only what is true of their data (country, columns known ahead, gaps, horizon, budget)."""
    d = Params()
    assert d.calendar.parts == "auto" and d.window.lookback == "auto"
    assert d.train.anchor == "auto" and d.train.decoder == "auto" and d.train.ensemble is True
    repo = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert repo.calendar.parts == "auto" and repo.train.anchor == "auto" and repo.train.decoder == "auto"
    assert repo.train.ensemble is True and repo.window.lookback == "auto"
    recipe = {"calendar": {"parts"}, "window": {"lookback"}, "train": {"anchor", "decoder", "ensemble"}}
    for name, over in repo.datasets.items():
        for section, keys in recipe.items():
            assert not keys & set(over.get(section) or {}), f"datasets.{name}.{section} sets a recipe key"

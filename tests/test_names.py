"""One rule for a dataset's name (pipeline/config.py), checked wherever a name comes in: the CLI's commands, the
library's ingest and paths, the flows, params.yaml. A name becomes a folder, DVC stage keys, a params key, a
registered model and Prefect deployments."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from cellcast.cli import app
from cellcast.pipeline.catalog import raw_paths
from cellcast.pipeline.config import DATASET_NAME_RULE, check_dataset_name, load_params
from cellcast.pipeline.errors import ConfigError

BAD = ["x y", "élec", "-rf", "a" * 300, "../evil", "", ".hidden", "a.b", "a/b", "tab\there", "a" * 65]
GOOD = ["load", "us_employment", "site-7", "7eleven", "A", "a" * 64]


def run(*args):
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


@pytest.fixture
def csv(project):
    path = project / "in.csv"
    pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=50, freq="h"), "y": range(50)}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("name", BAD)
def test_ingest_refuses_a_bad_name_in_one_line(project, csv, name):
    code, out = run("ingest", "--csv", str(csv), "--name", name, "--time-col", "ts", "--target", "y")
    assert code == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --name: "), out
    assert (DATASET_NAME_RULE in lines[0]) if name else ("required" in lines[0])
    assert "Traceback" not in out and len(lines[0]) < 300  # a 300-character name is shown cut short
    # nothing was written under any name: no data folder, no quarantine
    assert not (project / "data").exists() and not (project / "quarantine").exists()
    assert csv.is_file()


@pytest.mark.parametrize("name", GOOD)
def test_ingest_accepts_a_good_name(project, csv, name):
    code, out = run("ingest", "--csv", str(csv), "--name", name, "--time-col", "ts", "--target", "y")
    assert code == 0, out
    assert (project / "data" / name / "raw.parquet").is_file()


@pytest.mark.parametrize(
    "cmd", [["validate"], ["window"], ["train"], ["models"], ["forecast"], ["monitor"], ["promote", "--live"]]
)
@pytest.mark.parametrize("name", ["x y", "élec", "a" * 300, "../evil"])
def test_every_command_taking_a_name_refuses_it(project, cmd, name):
    code, out = run(*cmd, name)
    assert code == 2, out
    assert out.strip().startswith("error: dataset name") and DATASET_NAME_RULE in out and "Traceback" not in out


def test_the_library_and_params_use_the_same_rule(project):
    settings = load_params(project / "params.yaml").for_dataset("elecdemand")
    for name in BAD:
        with pytest.raises(ConfigError, match="dataset name"):
            check_dataset_name(name)
        with pytest.raises(ConfigError, match="dataset name"):
            raw_paths(
                settings.model_copy(update={"dataset": name})
            )  # every path of a dataset is built through the rule
        with pytest.raises(ConfigError, match="dataset name"):
            load_params(project / "params.yaml").for_dataset(name)
    for name in GOOD:
        assert (
            check_dataset_name(name) == name
            and raw_paths(settings.model_copy(update={"dataset": name}))[0].parent.name == name
        )
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("\ndatasets:\n", "\ndatasets:\n  x y: {}\n", 1))
    with pytest.raises(ConfigError, match=r"params.yaml: datasets: dataset name 'x y'"):
        load_params(project / "params.yaml")


def test_the_flows_refuse_a_bad_name(project):
    from cellcast.flows.monitoring import retrain_deployment_name, train_deployment_name

    for made in (train_deployment_name, retrain_deployment_name):
        with pytest.raises(ConfigError, match="dataset name"):
            made("x y")
    assert train_deployment_name("load") == "train-load" and retrain_deployment_name("load") == "retrain-load"

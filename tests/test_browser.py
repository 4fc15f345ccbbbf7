"""Every page a user opens, seen in a real browser: Debian's Chromium driven by Playwright, one browser for the
module. One training run of a small real-shaped series, through the Prefect server (its UI on) and an MLflow
server on PostgreSQL, then: the MLflow UI (aliases, lineage tags, the candidate's metrics and pictures), the
Prefect UI (the flow run's tasks, its Artifacts tab with the decision), and the GX Data Docs opened with every
network request refused. Screenshots go to test-artifacts/browser/ (git-ignored)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "browser"
# STACK.md: what runs as root with no network
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NAME = "pgload"
MODEL = f"{NAME}-forecaster"


def chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    from postgres_server import REQUIRE_ENV

    exe = chromium()
    if exe is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail("chromium not found (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not found: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def trained(trained_on_postgres, monkeypatch_module):
    """The session's training run on PostgreSQL (tests/conftest.py), a challenger beside its champion, and three
    scheduled-style refreshes as new hours arrive: the monitoring run gets a point per evaluation."""
    from cellcast.flows.forecasting import forecast_flow
    from cellcast.pipeline.registry import tracking
    from cellcast.pipeline.registry.promotion import Decision

    t = trained_on_postgres
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", t.mlflow)
    monkeypatch_module.chdir(t.project)
    tracking.configure()
    champion = tracking.get_alias(t.model, "champion").version
    logged = t.v1.source.split("/models/")[1].split("/")[0]
    new = tracking.register_version(t.model, f"models:/{logged}", t.v1.run_id, tags={"candidate": "again"})
    tracking.apply_decision(
        t.model,
        new,
        Decision(False, "not promoted by this test: the same model again", {"champion_version": champion}),
        expected_champion=champion,
    )
    horizon = json.loads((t.project / "data" / NAME / "windows.json").read_text())["horizon"]
    forecast_flow(NAME, t.settings, refresh=True)  # the first forecast after training
    for k in (1, 2, 3):  # a day of new hours arrives, the schedule fires
        t.full.iloc[: 2000 + k * horizon].to_csv(t.csv, index=False)
        forecast_flow(NAME, t.settings, refresh=True)
    return t


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def shot(page, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def body_text(page) -> str:
    return page.inner_text("body")


def dismiss_dialogs(page) -> None:
    """MLflow 3 opens a "new model registry UI" dialog (and others) on a first visit."""
    for label in ("Got it", "Close", "Dismiss", "OK"):
        button = page.get_by_role("button", name=label)
        if button.count():
            try:
                button.first.click(timeout=2000)
            except Exception:  # noqa: BLE001 - gone meanwhile
                pass


def test_mlflow_ui_shows_aliases_lineage_metrics_and_pictures(page, trained):
    base = trained.mlflow
    page.goto(f"{base}/#/models/{MODEL}")
    page.get_by_text("challenger").first.wait_for()
    dismiss_dialogs(page)
    text = body_text(page)
    assert re.search(r"@\s*champion", text) and re.search(r"@\s*challenger", text), text[:2000]
    shot(page, "mlflow-model-aliases")

    page.goto(f"{base}/#/models/{MODEL}/versions/1")
    page.get_by_text("data_md5").first.wait_for()
    dismiss_dialogs(page)
    text = body_text(page)
    tags = trained.v1.tags
    for key in ("data_md5", "params_hash", "git_commit", "code_version", "promotion.decision"):
        assert key in text, key
    assert tags["data_md5"] in text and tags["params_hash"] in text
    assert "champion" in text
    shot(page, "mlflow-version-lineage")

    run = trained.v1.run_id
    page.goto(f"{base}/#/experiments/{trained.experiment}/runs/{run}")
    page.get_by_text("test_mase").first.wait_for()
    dismiss_dialogs(page)
    text = body_text(page)
    # the champion may be a candidate that trains nothing (the anchor alone, the ensemble): no training loss then
    from mlflow import MlflowClient

    logged = MlflowClient(trained.mlflow).get_run(run).data.metrics
    shown = ["test_mase", "val_mase"] + (["train_loss"] if "train_loss" in logged else [])
    for metric in shown:
        assert metric in text, (metric, trained.v1.tags.get("candidate"), sorted(logged)[:40])
    shot(page, "mlflow-candidate-run")

    # the pictures compare the candidates with each other and the baseline: they are on the training (parent)
    # run, one click from the candidate's page
    page.get_by_role("link", name=f"train-{NAME}").first.click()
    page.get_by_role("tab", name="Artifacts").first.click()
    page.get_by_text("forecast_vs_actual.png").first.wait_for()
    text = body_text(page)
    for picture in ("forecast_vs_actual.png", "loss_curves.png", "error_by_horizon.png"):
        assert picture in text, picture
    page.get_by_text("forecast_vs_actual.png").first.click()
    img = page.locator("img[alt='forecast_vs_actual.png']").first
    img.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=img.element_handle())
    shot(page, "mlflow-candidate-pictures")


def test_prefect_ui_shows_the_tasks_and_the_decision_as_artifacts(page, trained):
    out = trained.outcome
    page.goto(f"{trained.prefect}/runs/flow-run/{trained.flow_run}")
    page.get_by_text("cellcast-train").first.wait_for()
    page.wait_for_timeout(1500)  # the graph draws itself
    shot(page, "prefect-flow-run-graph")
    # the graph is drawn on a canvas; the same task runs, as text, are on the Task Runs tab
    page.get_by_text("Task Runs", exact=True).first.click()
    page.get_by_text("track-and-promote").first.wait_for()
    text = body_text(page)
    tasks = {
        "check-tracking",
        "baselines",
        "track-and-promote",
        # each cell's training task; the ensemble of them has a task of its own, the anchor alone (it trains
        # nothing) is the anchor task's
        *({"ensemble": "ensemble", "anchor": "anchor"}.get(c["name"], f"train-{c['name']}") for c in out.candidates),
        *(f"assess-{c['name']}" for c in out.candidates),
    }
    missing = [t for t in tasks if t not in text]
    assert not missing, missing
    shot(page, "prefect-flow-run-tasks")

    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text(f"{NAME}-decision").first.wait_for()
    text = body_text(page)
    for key in (f"{NAME}-candidates", f"{NAME}-decision", f"{NAME}-{MODEL}-v1"):
        assert key in text, key
    shot(page, "prefect-flow-run-artifacts")

    page.get_by_text(f"{NAME}-decision").first.click()
    page.get_by_text("champion now").first.wait_for()
    text = body_text(page)
    verdict = "Promoted to champion" if out.decision["promote"] else "Not promoted"
    assert verdict in text and out.decision["reason"][:60] in text
    shot(page, "prefect-artifact-decision")

    page.go_back()
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text(f"{NAME}-candidates").first.click()
    page.get_by_text("baseline: naive").first.wait_for()
    text = body_text(page)
    for c in out.candidates:
        assert c["name"] in text
    shot(page, "prefect-artifact-candidates")


def test_gx_data_docs_render_with_no_network(page, trained):
    refused = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_files)
    index = trained.project / "reports" / NAME / "data_docs" / "index.html"
    page.goto(index.as_uri())
    row = page.locator("table tbody tr").filter(has_text=f"{NAME}-schema").first
    row.wait_for()
    # styled: bootstrap's table and navbar rules applied (unstyled, a table has no borders, the body Times). The
    # page's script builds its tables after the load: the row's own cell, once styled (expect retries until then)
    from playwright.sync_api import expect

    font = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert "Segoe UI" in font or "Roboto" in font, font
    expect(row.locator("td").first).to_have_css("border-top-style", "solid", timeout=15_000)
    shot(page, "gx-data-docs-index")

    assert f"{NAME}-source-{NAME}" in row.inner_text()  # the validation run of this dataset's asset
    row.get_by_text(f"{NAME}-source-{NAME}").click()  # a row opens its validation result
    page.get_by_text("Statistics").first.wait_for()
    text = body_text(page)
    assert "Expectation Validation Result" in text and "Evaluated Expectations" in text, text[:1500]
    assert "load" in text and "temp" in text  # our own series' columns
    shot(page, "gx-data-docs-validation")
    assert refused == [], refused  # nothing was fetched from a network


def test_mlflow_ui_monitoring_run_shows_metrics_over_time(page, trained):
    from cellcast.pipeline.registry import tracking

    rid = tracking.monitoring_run(NAME)
    steps = [s for s, _ in tracking.metric_history(rid, "mase_ratio")]
    assert len(steps) == 3, steps  # one point per refresh that had actuals to score
    page.goto(f"{trained.mlflow}/#/experiments/{trained.experiment}/runs/{rid}/model-metrics")
    page.get_by_text("mase_ratio").first.wait_for()
    dismiss_dialogs(page)
    page.wait_for_timeout(1500)  # the charts draw themselves
    shot(page, "mlflow-monitoring-run")
    text = body_text(page)
    assert "mase_ratio" in text, text[:3000]

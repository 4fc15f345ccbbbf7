"""The data flow: ingest -> validate -> window, each a task calling one pipeline function."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cellcast.pipeline.config import Settings
from cellcast.pipeline.data.findings import ValidationReport
from cellcast.pipeline.data.ingest import IngestResult, ingest_bundled, ingest_file, source_of
from cellcast.pipeline.data.validation import validate_dataset
from cellcast.pipeline.data.window import WindowSet, window_dataset


# No retries: a file that fails to parse or validate fails the same way every time.
@task(name="ingest", cache_policy=NO_CACHE, retries=0)
def ingest_task(name: str, settings: Settings, source: dict | None = None) -> IngestResult:
    # no source given (a scheduled or triggered run): the file this dataset was ingested from, if any
    source = source or source_of(name, settings)
    if source:
        return ingest_file(settings=settings, name=name, **source)
    return ingest_bundled(name, settings)


@task(name="validate", cache_policy=NO_CACHE, retries=0)
def validate_task(name: str, settings: Settings) -> ValidationReport:
    return validate_dataset(name, settings)


@task(name="window", cache_policy=NO_CACHE, retries=0)
def window_task(name: str, settings: Settings) -> WindowSet:
    return window_dataset(name, settings)


def data_steps(name: str, settings: Settings, source: dict | None = None) -> WindowSet:
    """The three tasks in order; returns the WindowSet. Called inside data_flow and training_flow."""
    ingest_task(name, settings, source)
    validate_task(name, settings)
    return window_task(name, settings)


@flow(name="cellcast-data", log_prints=True)
def data_flow(name: str, settings: Settings, source: dict | None = None) -> WindowSet:
    """ingest -> validate -> window. `source` holds ingest_file's options for a user file; none: bundled."""
    ws = data_steps(name, settings, source)
    print(
        f"{name}: {ws.meta.rows} rows, windows {ws.meta.counts}, lookback {ws.meta.lookback}, horizon {ws.meta.horizon}"
    )
    return ws

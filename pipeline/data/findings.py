"""What validation finds: the report it writes, and a broken rule (the unit both the Great
Expectations suite and the gap/duplicate policy report in)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

EXAMPLES = 5  # examples of bad values kept per broken rule

# what to do about each broken rule: every refusal names its remedy
REMEDY = {
    "unique": "run `cellcast validate NAME --dedupe first|last|mean` to merge them (kept for later runs of the "
    "dataset; or set ingest.dedupe in params.yaml)",
    "long_gap": "run `cellcast validate NAME --long-gaps segment` to keep such runs as breaks no window crosses "
    "(kept for later runs of the dataset; or ingest.long_gaps), or raise ingest.max_fill_steps in params.yaml to fill "
    "them",
    "finite": "fix or blank those cells at the source (blank cells are filled up to ingest.max_fill_steps)",
    "not_null": "a column empty in every row cannot be a variable: drop it from --features / --target and re-ingest",
    "increasing": "re-ingest the file (cellcast ingest sorts the rows)",
    "numeric": "re-ingest the file (cellcast ingest writes numeric columns)",
    "exists": "re-ingest the file with --target / --features naming its columns",
    "in_range": "fix those values at the source, or widen validate.bounds in params.yaml",
    "schedule": "re-ingest with the hours the series keeps (--schedule 'Mon-Fri 08:00-16:30', or none for 24/7)",
}


@dataclass
class ValidationReport:
    name: str
    source: str
    success: bool
    freq: str
    rows_in: int
    rows_out: int = 0
    policy: dict = field(default_factory=dict)  # the settings.ingest used
    dedupe: dict = field(default_factory=dict)  # {mode, duplicated_rows, timestamps}
    snapped: dict = field(default_factory=dict)  # {off_grid, merged}
    inserted_rows: int = 0  # grid points missing from the input
    trimmed_rows: int = 0  # leading/trailing rows that could not be filled
    filled: dict = field(default_factory=dict)  # column -> points interpolated
    dropped: dict = field(default_factory=dict)  # column -> points blanked by a break (segment)
    breaks: list = field(default_factory=list)  # [{start, end, steps[, off_hours]}]
    long_runs: list = field(default_factory=list)  # runs longer than max_fill_steps
    bounds: dict = field(default_factory=dict)  # column -> [lo, hi]
    bounds_source: dict = field(default_factory=dict)
    windows: dict = field(default_factory=dict)  # {lookback, horizon, train, val, test}
    gx: dict = field(default_factory=dict)  # {success, evaluated, failed: [...]}
    failures: list = field(default_factory=list)  # every failed rule: {column, rule, unexpected_count, examples}
    error: str | None = None
    data_docs: str | None = None
    report_path: str | None = None
    quarantine_path: str | None = None
    seconds: float = 0.0
    frame: pd.DataFrame | None = field(default=None, repr=False)
    # panels only (left out of a single series' report): a series' reporting hours, the panel's per-series report
    schedule: list | None = None  # times of day a series reports at, e.g. ['08:00-18:00']
    panel: dict | None = None  # validation.panel_report: series in, kept, dropped, per series

    def to_dict(self) -> dict:
        """The report as JSON-ready data (the frame is not part of it)."""
        d = {k: v for k, v in self.__dict__.items() if k != "frame" and not (k in ("schedule", "panel") and v is None)}
        return json.loads(json.dumps(d, default=str))


class RuleFailure(Exception):
    """A rule the data broke: the column, the rule, how many rows and a few examples."""

    def __init__(self, column: str, rule: str, count: int, examples: list, detail: str = ""):
        super().__init__(rule)
        self.column, self.rule, self.count, self.examples, self.detail = column, rule, count, examples, detail
        self.series: dict | None = None  # in a panel: {series_id: {count, examples}} of the rows found

    def as_dict(self) -> dict:
        return {
            "column": self.column,
            "rule": self.rule,
            "unexpected_count": self.count,
            "examples": [str(x) for x in self.examples[:EXAMPLES]],
            "detail": self.detail,
        }

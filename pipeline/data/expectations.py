"""The Great Expectations suite of a canonical frame, run with Data Docs. The only module that imports
great_expectations (slow to import: only when a frame is validated)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ..catalog import SERIES_ID
from .findings import EXAMPLES, RuleFailure

if TYPE_CHECKING:  # great_expectations is imported where it is used (a slow import)
    from great_expectations.checkpoint.actions import ValidationAction

_NUMERIC = [
    "float64",
    "float32",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "Float64",
    "Int64",
]
_FINITE = float(np.finfo(np.float64).max)


def _gx_suite(gx, cols: list[str], dedupe: str, bounds: dict, min_rows: int | None, id_cols: list[str] | None = None):
    E = gx.expectations
    ex = [
        E.ExpectColumnToExist(column="timestamp", meta={"rule": "exists"}),
        E.ExpectColumnValuesToNotBeNull(column="timestamp", meta={"rule": "not_null"}),
    ]
    if id_cols is not None:
        # a panel: the same rules, with the series in the batch; time order is per series (checked beside GX)
        for c in [SERIES_ID, *[i for i in id_cols if i != SERIES_ID]]:
            ex += [
                E.ExpectColumnToExist(column=c, meta={"rule": "exists"}),
                E.ExpectColumnValuesToNotBeNull(column=c, meta={"rule": "not_null"}),
            ]
        if dedupe == "reject":
            ex.append(E.ExpectCompoundColumnsToBeUnique(column_list=[SERIES_ID, "timestamp"], meta={"rule": "unique"}))
    else:
        if dedupe == "reject":
            ex.append(E.ExpectColumnValuesToBeUnique(column="timestamp", meta={"rule": "unique"}))
        ex.append(
            E.ExpectColumnValuesToBeIncreasing(
                column="timestamp", strictly=dedupe == "reject", meta={"rule": "increasing"}
            )
        )
    for c in cols:
        ex += [
            E.ExpectColumnToExist(column=c, meta={"rule": "exists"}),
            E.ExpectColumnValuesToBeInTypeList(column=c, type_list=_NUMERIC, meta={"rule": "numeric"}),
            # GX has no 'finite' expectation: inf lies outside the largest finite float
            E.ExpectColumnValuesToBeBetween(column=c, min_value=-_FINITE, max_value=_FINITE, meta={"rule": "finite"}),
        ]
        if c in bounds:
            ex.append(
                E.ExpectColumnValuesToBeBetween(
                    column=c, min_value=bounds[c][0], max_value=bounds[c][1], meta={"rule": "in_range"}
                )
            )
    if min_rows:
        ex.append(E.ExpectTableRowCountToBeBetween(min_value=min_rows, meta={"rule": "min_rows"}))
    return ex


class Suite:
    """The suite built once (a GX context, the expectations, a checkpoint), run on one frame or many: the
    partitions of a panel go through one Suite. `id_cols` makes it a panel's suite: results at COMPLETE
    detail, each failure with the rows it found counted per series (RuleFailure.series)."""

    def __init__(
        self,
        name: str,
        cols: list[str],
        dedupe: str,
        bounds: dict,
        min_rows: int | None = None,
        docs_dir: Path | None = None,
        id_cols: list[str] | None = None,
    ):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx  # slow (4-9 s): only when validating
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.min_rows, self.docs_dir, self.panel = min_rows, docs_dir, id_cols is not None
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch = (
            ctx.data_sources.add_pandas(f"{name}-source")
            .add_dataframe_asset(name)
            .add_batch_definition_whole_dataframe("whole")
        )
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{name}-schema"))
        for e in _gx_suite(gx, cols, dedupe, bounds, min_rows, id_cols):
            suite.add_expectation(e)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{name}-validation", data=batch, suite=suite))
        actions: list[ValidationAction] = []
        if docs_dir is not None:
            if docs_dir.exists():
                shutil.rmtree(docs_dir)  # our own output: one run's docs, not an accumulating history
            ctx.add_data_docs_site(
                site_name="cellcast",
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(docs_dir.resolve()),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
            actions = [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["cellcast"])]
        fmt: dict[str, object] | Literal["SUMMARY"]
        fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": [SERIES_ID]} if self.panel else "SUMMARY"
        self._checkpoint = ctx.checkpoints.add(
            gx.Checkpoint(name=f"{name}-checkpoint", validation_definitions=[vd], actions=actions, result_format=fmt)
        )

    @property
    def index(self) -> str | None:
        return None if self.docs_dir is None else str(self.docs_dir / "index.html")

    def run(self, df: pd.DataFrame) -> tuple[dict, list[RuleFailure]]:
        res = self._checkpoint.run(batch_parameters={"dataframe": df})
        vr = next(iter(res.run_results.values()))
        failed, rows = [], []
        for r in vr.results:
            cfg = r.expectation_config
            assert cfg is not None  # GX fills it in every result of a suite run
            col = cfg.kwargs.get("column") or "timestamp"
            rule = (cfg.meta or {}).get("rule", cfg.type)
            result = r.result or {}
            row = {
                "expectation": cfg.type,
                "column": col,
                "rule": rule,
                "success": bool(r.success),
                "unexpected_count": result.get("unexpected_count"),
                "observed_value": None if result.get("observed_value") is None else str(result["observed_value"]),
                "examples": [str(x) for x in (result.get("partial_unexpected_list") or [])[:EXAMPLES]],
            }
            if r.exception_info and r.exception_info.get("raised_exception"):
                row["exception"] = str(r.exception_info.get("exception_message"))[:300]
            if not r.success:
                count = result.get("unexpected_count")
                if count is None:  # table-level rules (row count) and errors
                    count = len(df)
                examples = row["examples"] or ([row["observed_value"]] if row["observed_value"] else [])
                if rule == "min_rows":
                    examples = [f"{len(df)} rows, need at least {self.min_rows}"]
                f = RuleFailure(col, rule, int(count), examples)
                if self.panel and result.get("unexpected_index_list") is not None:
                    f.series = _by_series(result["unexpected_index_list"], col)
                    row["series"] = {k: v["count"] for k, v in list(f.series.items())[:EXAMPLES]}
                    row["series_count"] = len(f.series)
                failed.append(f)
            rows.append(row)
        if self.docs_dir is not None:
            offline_docs(self.docs_dir)
        return {"success": bool(vr.success), "evaluated": len(rows), "results": rows}, failed


def _by_series(found: list, column: str) -> dict[str, dict]:
    """GX's unexpected rows ({series_id: .., column: value}) -> {series_id: {count, examples}}."""
    out: dict[str, dict] = {}
    for item in found:
        sid = str(item.get(SERIES_ID)) if isinstance(item, dict) else "?"
        s = out.setdefault(sid, {"count": 0, "examples": []})
        s["count"] += 1
        if len(s["examples"]) < EXAMPLES and isinstance(item, dict):
            s["examples"].append(str(item.get(column, item.get("timestamp"))))
    return out


def run_suite(
    df: pd.DataFrame, name: str, cols: list[str], dedupe: str, bounds: dict, min_rows: int | None, docs_dir: Path | None
) -> tuple[dict, list[RuleFailure], str | None]:
    suite = Suite(name, cols, dedupe, bounds, min_rows, docs_dir)
    out, failed = suite.run(df)
    return out, failed, suite.index


# ---------------------------------------------------------------- Data Docs that render with no network

ASSETS = Path(__file__).with_name("docs_assets")  # copies from npm, with their licences (docs_assets/README.md)
# what Great Expectations 1.24's Data Docs load from CDNs -> the copy shipped here. Without them, offline, the
# index's list of validations stays empty (bootstrap-table builds it in JavaScript) and every page is unstyled.
CDN_COPIES = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper/popper.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": "bootstrap-table/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": "bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": "bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": "bootstrap-datepicker/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": "bootstrap-datepicker/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": "bootstrap-dark/bootstrap-prefers-dark.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega/vega-embed.min.js",
}
# GX's logo, fetched from its web bucket (with a cache-busting query): the copy its own static folder has
_LOGO = re.compile(
    r"https://great-expectations-web-assets\.s3\.[a-z0-9.-]+/(?:logo-long|full_logo_dark)\.png"
    r"(?:\?[^\"')\s]*)?"
)
VENDOR = "static/vendor"


def offline_docs(docs_dir: Path) -> list[Path]:
    """Point every page of the Data Docs in `docs_dir` at local copies of its CSS, JavaScript and images
    (copied to docs_dir/static/vendor); the pages' links to GX's website stay links. Returns the pages."""
    docs_dir = Path(docs_dir)
    shutil.copytree(ASSETS, docs_dir / VENDOR, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))
    pages = sorted(docs_dir.rglob("*.html"))
    urls = sorted(CDN_COPIES, key=len, reverse=True)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        up = Path(os.path.relpath(docs_dir, page.parent)).as_posix()
        for url in urls:
            text = text.replace(url, f"{up}/{VENDOR}/{CDN_COPIES[url]}")
        text = _LOGO.sub(f"{up}/static/images/logo-long.png", text)
        page.write_text(text, encoding="utf-8")
    return pages

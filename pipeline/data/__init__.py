"""Data in: bundled datasets, reading files, validating them, cutting windows.

Owns: datasets (bundled, offline), ingest (any CSV/Parquet -> canonical Parquet: readers, dates for the time
column, frequency, schedule for opening hours; panels in long format: panel, resample), database (a query's rows
through SQLAlchemy), validation (Great Expectations in expectations + the gap/duplicate policy in cleaning, what
they find in findings; per series for a panel: panel_validation), windows (the stage: window; sizes, splits,
scalers: splits; the WindowSet and its strided views: windowset; a panel's: panel_windows; seasonal naive and
median arithmetic: seasonal), folds (rolling-origin cuts for backtests), calendar (known-future features), drift
(the reference profile and PSI the monitor reads), versioning (DVC).
May import: the core (config, errors, catalog, files). Must not import: modeling, engine, registry, monitoring,
serving, flows or the CLI. Great Expectations is imported only in expectations, DVC only in versioning, SQLAlchemy
only in database, holidays only in calendar.
"""

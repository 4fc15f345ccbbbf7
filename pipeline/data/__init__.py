"""Data in: bundled datasets, reading files, validating them, cutting windows.

Owns: datasets (bundled, offline), ingest (any CSV/Parquet -> canonical Parquet; panels in long format:
panel.py, resample.py), validation (Great Expectations + the gap/duplicate policy; per series for a panel:
panel_validation.py), windows (the stage: window.py; sizes, splits, scalers: splits.py; the WindowSet and
its strided views: windowset.py; a panel's: panel_windows.py), versioning (DVC), database (a query's rows
through SQLAlchemy).
May import: the core (config, errors). Must not import: modeling, engine, registry, serving,
flows or the CLI. Great Expectations is imported only in validation, DVC only in versioning, SQLAlchemy only in
database.
"""

"""Prefect flows: thin orchestration over `pipeline`. Importing this package sets the Prefect
defaults cellcast relies on (no analytics; a server start-up timeout that holds on 2 cores)."""
import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")

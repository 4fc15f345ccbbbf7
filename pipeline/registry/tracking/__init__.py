"""MLflow: runs, logged models, the model registry and its aliases. The only package that imports mlflow.

Default store: embedded sqlite `<root>/.cellcast/mlflow.db`, artifacts in `<root>/.cellcast/mlartifacts`;
`MLFLOW_TRACKING_URI` points everything at a tracking server instead.
One experiment per dataset (`cellcast/NAME`), one registered model per dataset (`NAME-forecaster`),
and three aliases: `champion` (what serves), `challenger` (the latest registered), `previous` (what
`rollback` goes back to). Promotion only moves aliases; versions are never edited or deleted.

Reaching a tracking server: one retry mechanism, MLflow's own per-request HTTP retries, bounded by
params.yaml `registry.retry_seconds` / `request_timeout_s` (set here as the MLFLOW_HTTP_REQUEST_*
variables, which MLflow reads at every request). Each retry logs one line; when they run out, every
public function here raises TrackingUnavailableError (one line naming the server), never MLflow's chain.

One job a module: server (which store, the retries, the one error), runs (parent and candidate runs, what they log,
runs a killed process left open), models (logged ONNX and torch models), versions (the registry, aliases and their
lock, rollback, downloads), monitoring (the monitoring run). Callers use `tracking.NAME`: this file re-exports them.
"""

from .models import (
    log_onnx_model,
    log_torch_model,
)
from .monitoring import (
    MONITOR_KIND,
    log_monitoring,
    metric_history,
    monitoring_run,
    run_tags,
)
from .runs import (
    OWNER_TAGS,
    _owner,
    candidate_run,
    end_orphans,
    log_artifact,
    log_dict,
    log_figure,
    log_metrics,
    log_params,
    log_table,
    parent_run,
    read_table,
    set_tags,
)
from .server import (
    CHALLENGER,
    CHAMPION,
    MAX_RETRIES,
    PREVIOUS,
    STORE_DIR,
    UI_DEFAULT,
    RetryPolicy,
    check_reachable,
    configure,
    experiment_name,
    retry_policy,
    server_url,
    tracking_uri,
    ui_links,
)
from .versions import (
    ABANDONED,
    ALIAS_LOCK_STALE_S,
    ALIAS_LOCK_SUFFIX,
    ALIAS_LOCK_WAIT_S,
    ANY,
    VersionInfo,
    aliases_locked,
    apply_decision,
    data_versions,
    download_model,
    end_undecided,
    get_alias,
    get_version,
    list_versions,
    register_version,
    rollback,
    set_version_tags,
)

__all__ = [
    "ABANDONED",
    "ALIAS_LOCK_STALE_S",
    "ALIAS_LOCK_SUFFIX",
    "ALIAS_LOCK_WAIT_S",
    "ANY",
    "CHALLENGER",
    "CHAMPION",
    "MAX_RETRIES",
    "MONITOR_KIND",
    "OWNER_TAGS",
    "PREVIOUS",
    "RetryPolicy",
    "STORE_DIR",
    "UI_DEFAULT",
    "VersionInfo",
    "_owner",
    "aliases_locked",
    "apply_decision",
    "candidate_run",
    "check_reachable",
    "configure",
    "data_versions",
    "download_model",
    "end_orphans",
    "end_undecided",
    "experiment_name",
    "get_alias",
    "get_version",
    "list_versions",
    "log_artifact",
    "log_dict",
    "log_figure",
    "log_metrics",
    "log_monitoring",
    "log_onnx_model",
    "log_params",
    "log_table",
    "log_torch_model",
    "metric_history",
    "monitoring_run",
    "parent_run",
    "read_table",
    "register_version",
    "retry_policy",
    "rollback",
    "run_tags",
    "server_url",
    "set_tags",
    "set_version_tags",
    "tracking_uri",
    "ui_links",
]

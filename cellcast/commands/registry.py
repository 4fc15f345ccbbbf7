"""`cellcast models`, `cellcast promote --live`, `cellcast rollback`, `cellcast ui`: look at and move the model
registry."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import typer

from cellcast.commands import configure_tracking, friendly, settings_for
from cellcast.stopping import run_foreground

# the decision tags worth a column, in this order
_COLUMNS = ("promotion.candidate_mase", "promotion.baseline_mase", "promotion.baseline_name", "promotion.champion_mase")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    ).rstrip()


def versions_table(versions) -> str:
    """The registry view of one model: a row per version, newest first."""
    header = ["version", "aliases", "decision", "MASE", "baseline", "base MASE", "champ MASE", "run", "reason"]
    rows = []
    for v in versions:
        t = v.tags
        rows.append(
            [
                f"v{v.version}",
                ",".join(v.aliases) or "-",
                t.get("promotion.decision", "-"),
                _short(t.get("promotion.candidate_mase")),
                t.get("promotion.baseline_name") or "-",
                _short(t.get("promotion.baseline_mase")),
                _short(t.get("promotion.champion_mase")),
                v.run_id[:8] or "-",
                t.get("promotion.reason", ""),
            ]
        )
    return _table(rows, header)


def _short(x: str | None) -> str:
    if x is None:
        return "-"
    try:
        return f"{float(x):.4g}"
    except (TypeError, ValueError):
        return "-"


def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The MLflow UI on store `uri`, with the mlflow of this environment (a bare `mlflow` may be another one)."""
    exe = Path(sys.executable).with_name("mlflow")
    return [
        str(exe) if exe.exists() else "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--port",
        str(port),
        "--host",
        host,
    ]


def register(app: typer.Typer) -> None:
    app.command()(models)
    app.command()(rollback)
    app.command()(promote)
    app.command()(ui)


@friendly
def models(name: str = typer.Argument(..., help="dataset name; the model is <name>-forecaster")) -> None:
    """List a dataset's registered model versions, their aliases and promotion decisions."""
    from cellcast.pipeline.errors import NotFoundError
    from cellcast.pipeline.registry import tracking

    settings = settings_for(name)
    model_name = settings.model_name
    configure_tracking(settings)
    tracking.end_undecided(model_name)  # versions whose training process died before deciding: say so
    versions = tracking.list_versions(model_name)
    if not versions:
        raise NotFoundError(f"model '{model_name}' has no registered versions: train one with `cellcast train {name}`")
    champ = next((v for v in versions if "champion" in v.aliases), None)
    typer.echo(f"{model_name}: {len(versions)} version(s), champion {'v' + str(champ.version) if champ else 'none'}")
    typer.echo(versions_table(versions))


@friendly
def rollback(name: str = typer.Argument(..., help="dataset name; the model is <name>-forecaster")) -> None:
    """Make the 'previous' version champion again (run twice to undo)."""
    from cellcast.pipeline.registry import tracking

    settings = settings_for(name)
    model_name = settings.model_name
    configure_tracking(settings)
    before = tracking.get_alias(model_name, "champion")
    now = tracking.rollback(model_name)
    was = f"v{before.version}" if before else "none"
    typer.echo(f"{model_name}: champion {was} -> v{now.version}; previous is now {was}")


@friendly
def promote(
    name: str = typer.Argument(..., help="dataset name; the model is <name>-forecaster"),
    live: bool = typer.Option(False, "--live", help="decide on the live forecasts the service logged"),
) -> None:
    """Make the challenger champion when its live errors beat the champion's (the training flow's
    Diebold-Mariano test, evaluate.significance) on at least monitor.live_min_forecasts forecasts both answered
    (shadow or canary). Exit 0 when promoted, 1 when not (one line saying why)."""
    from cellcast.pipeline.errors import ConfigError
    from cellcast.pipeline.monitoring.promote import promote_live

    settings = settings_for(name)
    if not live:
        raise ConfigError(
            "cellcast promote: only --live is supported (a version is decided on its test split when "
            f"`cellcast train {name}` registers it)"
        )
    configure_tracking(settings)
    out = promote_live(settings)
    typer.echo(out.line)
    if not out.promoted:
        raise typer.Exit(1)


@friendly
def ui(
    start: bool = typer.Option(False, "--start", help="run it instead of printing it"),
    port: int = typer.Option(5000, help="port for the UI"),
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
) -> None:
    """Print (or with --start, run) the command that opens the MLflow UI on this project's store."""
    uri = configure_tracking()
    if uri.startswith(("http://", "https://")):
        typer.echo(f"tracking server in use (MLFLOW_TRACKING_URI): open {uri}")
        return
    cmd = ui_command(uri, host, port)
    typer.echo(shlex.join(cmd))
    if start:
        # no background job runner: the UI answers in seconds instead of ~45 s
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        raise typer.Exit(run_foreground(cmd, env=env))

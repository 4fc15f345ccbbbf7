"""`cellcast monitor NAME`: the champion's monitoring state (pipeline/monitoring/status.py)."""

from __future__ import annotations

import json

import typer

from cellcast.commands import settings_for


def register(app: typer.Typer) -> None:
    from cellcast.cli import friendly

    @app.command()
    @friendly
    def monitor(
        name: str = typer.Argument(..., help="dataset name"),
        as_json: bool = typer.Option(False, "--json", help="print reports/NAME/monitoring/state.json"),
    ) -> None:
        """Show how the champion is doing: its last scores on the actuals that arrived (rolling MASE vs its test
        MASE and vs seasonal naive, bias, interval coverage), input drift, the thresholds, the last retrain
        trigger and the cooldown. The scheduled forecast flow (refresh) updates it."""
        from cellcast.pipeline.monitoring.state import read_state
        from cellcast.pipeline.monitoring.status import status

        settings = settings_for(name)
        text = status(settings, aliases=_aliases(settings))  # NotFoundError when never monitored
        typer.echo(json.dumps(read_state(settings), indent=2) if as_json else text)


def _aliases(settings) -> dict[str, str | None] | None:
    """The registry's champion and challenger now, for the live section of `cellcast monitor` (only read where the
    service logged live forecasts); None when the registry cannot be reached or holds no alias of the model: the
    log's roles stand in."""
    from cellcast.commands import configure_tracking
    from cellcast.pipeline.catalog import live_dir
    from cellcast.pipeline.errors import CellcastError

    if not live_dir(settings).is_dir():
        return None
    try:
        from cellcast.pipeline.registry import tracking

        configure_tracking(settings)
        found = {r: tracking.get_alias(settings.model_name, r) for r in (tracking.CHAMPION, tracking.CHALLENGER)}
    except CellcastError:
        return None
    if all(v is None for v in found.values()):  # a registry that knows no such model: the log's roles stand
        return None
    return {r: str(v.version) if v is not None else None for r, v in found.items()}

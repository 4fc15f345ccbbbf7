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
        text = status(settings)  # NotFoundError (one line, exit 2) when never monitored
        typer.echo(json.dumps(read_state(settings), indent=2) if as_json else text)

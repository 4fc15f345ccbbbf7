"""`cellcast doctor`: what this machine can run cellcast on, and why not."""

from __future__ import annotations

import json

import typer

from cellcast.commands import check_device, settings_for


def register(app: typer.Typer) -> None:
    from cellcast.cli import friendly

    @app.command()
    @friendly
    def doctor(
        device: str | None = typer.Option(None, help="auto | cpu | cuda (default: params.yaml train.device)"),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Check torch (build, CUDA, cuDNN, GPU, TF32, threads, a training step on the GPU) and ONNX Runtime
        (package, providers, CUDA libraries, a real CUDA session). Exit 0 when the device works, else 2 with why."""
        from cellcast.pipeline.engine.doctor import diagnose, render

        check_device(device)
        if device is None:
            device = settings_for().train.device
        d = diagnose(device)
        typer.echo(json.dumps(d.to_dict(), indent=2, default=str) if as_json else render(d))
        d.raise_unless_ok()

"""What is tracked, registered and promoted, and why: tracking (MLflow), promotion (the policy),
lifecycle (a training run after the loop: assess, track, register, promote), results (what a training run
found, one typed table), backtest (rolling-origin evaluation), report (DVC metrics of a registered model).

May import: the core, data, modeling and engine. Must not import: monitoring, serving, flows or the CLI.
MLflow is imported only in tracking.
"""

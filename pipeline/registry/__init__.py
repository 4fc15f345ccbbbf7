"""What is tracked, registered and promoted, and why: tracking (MLflow), promotion (the policy),
lifecycle (a training run after the loop: assess, track, register, promote), report (DVC metrics of
a registered model).

May import: the core, data, modeling and engine. Must not import: serving, flows or the CLI.
MLflow is imported only in tracking.
"""

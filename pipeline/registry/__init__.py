"""What is tracked, registered and promoted, and why: tracking (MLflow), promotion (the policy),
and a training run after the loop, one job a module: assessment (the baselines; a candidate exported, gated on
parity, scored), metadata (what travels in the ONNX model: its metadata, the drift reference), lineage (where a
version comes from, as tags), champion (the champion re-scored on the origins it never saw), decision (the best
selected, the evidence, the policy's decision and its reason), references (the classical references as evidence),
promotion_run (track_and_promote: the runs tracked, the best registered, the decision applied), run_logs (what the
runs log to MLflow), pictures (the run's figures), summary (the text `cellcast run` prints, the summary file);
results (what a training run found, one typed table), backtest (rolling-origin evaluation), report (DVC
metrics of a registered model).

May import: the core, data, modeling and engine. Must not import: monitoring, serving, flows or the CLI.
MLflow is imported only in tracking.
"""

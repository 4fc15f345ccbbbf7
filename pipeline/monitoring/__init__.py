"""Is the champion still good? The monitor scores the forecasts written earlier (forecasts/NAME/*.parquet)
against the actuals that have arrived since, measures how far recent inputs moved from the training split,
and judges whether a retrain is due. Plain functions and files; the scheduled forecast flow calls
`evaluate.evaluate` after each refresh and starts the retrain deployment when the verdict says so.

One job a module:
- scoring: accuracy on the rolling window (the points whose time lies in the latest `monitor.window` steps), for
  the champion's own forecasts only (a new champion starts afresh): MASE scaled by the training split's in-sample
  one-step naive MAE (the scale of the champion's test MASE, so `mase / test_mase` compares like with like), the
  seasonal naive forecast from the same origins on the same points, bias, and interval coverage from the quantile
  columns;
- drift lives in data/drift.py (PSI per variable against the training split's bins, the share of values outside
  the trained bounds), on the latest `monitor.drift_rows` rows;
- champion: what the monitor needs of the serving model (registry tags, ONNX metadata, its training reference);
- verdict: the thresholds and the rule that asks for a retrain, with its cooldown;
- report: the typed result of one evaluation;
- state: reports/NAME/monitoring/state.json, the last evaluation and the triggers;
- evaluate: one evaluation end to end (files under reports/NAME/monitoring/, and the long-lived MLflow run
  `monitor-NAME` of the dataset's experiment, one step per evaluation, through registry/tracking);
- panel: a panel's series each scored and judged as one series is, the retrain on the share of them past a threshold
  (`monitor.panel_share`);
- status: `cellcast monitor NAME` as text;
- live: the service's live forecast log (forecasts/NAME/live/) scored per version and role on the arrived actuals,
  and the champion's and the challenger's losses on the same forecast paths;
- promote: promotion on that live evidence (`cellcast promote NAME --live`, params `monitor.live_promotion`).

May import: the core, data, engine and registry. Must not import: serving, flows or the CLI.
"""

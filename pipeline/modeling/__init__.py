"""The forecaster and how it is trained and scored: model, train, anchor (what the residual is learnt over),
quantiles (calibration and interval scores), evaluate (metrics and baselines), panel_eval (a panel per series),
local (one model per series, for comparison), classical and panel_references (the reference forecasts, per series
on a panel), plots, device (is there a GPU, what torch can do with it, fp32 kept exact on it).

May import: the core and data. Must not import: engine, registry, monitoring, serving, flows or the CLI, nor
MLflow, Prefect, Great Expectations, DVC or ONNX Runtime (it runs where only torch is). statsmodels is imported
only in classical.
"""

"""The deployable artefact and what runs it: onnx_export (torch -> ONNX, parity gate), inference
(ONNX Runtime sessions, providers, engine choice per batch size) and doctor (what this machine can run
on: torch and ONNX Runtime probed, the configured device judged).

May import: the core, data and modeling. Must not import: registry, monitoring, serving, flows or the CLI, nor
MLflow, Prefect, Great Expectations or DVC. torch.onnx is used only in onnx_export, onnxruntime only
in inference.
"""

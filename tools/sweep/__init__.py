"""Compression sweeps: many candidate recipes on one model, in parallel (local processes or Ray), resumable,
with the size-latency-fidelity Pareto front (``onnxpress sweep``; the API is ``runner.run_sweep``).

Nothing is imported here: ``python -m onnxpress.tools.sweep.worker`` starts from this package, and importing the
worker's own modules first would make runpy warn on every candidate."""

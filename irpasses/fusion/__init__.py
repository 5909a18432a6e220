"""Fusion and simplification passes built from onnxscript rewrite rules (pinned) plus rules of our own."""

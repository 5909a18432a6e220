"""Quantization: calibration statistics and calibrators (QDQ insertion and weight-only blocks build on them)."""

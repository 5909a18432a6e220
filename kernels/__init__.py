"""Compiled kernels (sparse, low-bit) with numpy reference implementations.

Kernels reach onnxruntime as onnxruntime-extensions PyOps in domain ``ai.onnx.contrib``; importing this package
registers them (the ORT backend imports it when a model uses that domain). None ship yet: the first ones come
with the 2:4-sparsity and low-bit issues, each with a numpy ``reference`` the CPU tests compare against.
"""

"""Backends turn a rewritten model into something that runs (ONNX Runtime sessions; TensorRT engines)."""

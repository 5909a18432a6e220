"""Frontends lower models (ONNX files; later PyTorch, TensorFlow, scikit-learn) to one onnx-ir model."""

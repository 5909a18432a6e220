"""OpenVINO backend (CPU plug-in): ships with onnxpress (``pip install 'onnxpress[openvino]'`` adds the runtime)
and registers through the same ``onnxpress.backends`` entry point as every backend; nothing in the core
imports it."""

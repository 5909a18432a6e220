"""OpenVINO backend plug-in: the core never imports this; it is found through the entry point."""

from onnxpress.irpasses.core import API_VERSION, Plugin

PLUGIN = Plugin(api_version=API_VERSION, backends={"openvino": "onnxpress_openvino.backend:OpenVinoBackend"})

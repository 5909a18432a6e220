"""An out-of-tree plug-in: registers one pass and one pipeline through the ``onnxpress.passes`` entry point."""

from onnxpress.irpasses.core import API_VERSION, Plugin

PLUGIN = Plugin(
    api_version=API_VERSION,
    passes={"fold-double-relu": "onnxpress_example_plugin.double_relu:FoldDoubleRelu"},
    pipelines={"example-cleanup": "fold-double-relu,dead-code"},
)

"""The load -> cleanup -> save cases, one function per tool; each runs in its own process (see __main__)."""

from __future__ import annotations

import sys


def onnxpress_cleanup(src: str, dst: str) -> None:
    from onnxpress.tools.cli import main

    code = main(["opt", src, "-o", dst, "-p", "cleanup", "--no-verify", "-q"])
    if code:
        raise SystemExit(code)


def onnx_raw(src: str, dst: str) -> None:
    """Raw protobuf: load with weights, save with external data (no cleanup at all)."""
    import onnx

    model = onnx.load(src)
    onnx.save_model(model, dst, save_as_external_data=True, location=dst.rsplit("/", 1)[-1] + ".data")


def graphsurgeon(src: str, dst: str) -> None:
    import onnx
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(onnx.load(src))
    graph.cleanup().toposort()
    onnx.save_model(gs.export_onnx(graph), dst, save_as_external_data=True, location=dst.rsplit("/", 1)[-1] + ".data")


def onnxslim(src: str, dst: str) -> None:
    import onnxslim as slim

    slim.slim(src, dst)


CASES = {"onnxpress": onnxpress_cleanup, "onnx": onnx_raw, "onnx-graphsurgeon": graphsurgeon, "onnxslim": onnxslim}

if __name__ == "__main__":
    CASES[sys.argv[1]](sys.argv[2], sys.argv[3])

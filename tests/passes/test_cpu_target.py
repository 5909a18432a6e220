"""Quantized models keep their fidelity on CPUs without VNNI (issue 13).

onnxruntime's u8 x s8 kernels add neighbouring products into a saturating int16 on AVX2 and pre-VNNI AVX-512
CPUs. ``cpu=portable`` (the default) keeps int8 weights read by integer kernels within +-64 so no pair can
saturate; ``cpu=vnni`` uses the full range. The structural tests hold everywhere; the emulated test runs
onnxruntime on qemu's AVX2 CPU (``tools/cpu_emulation.py``) and compares it with the same quantized graph
computed in float (optimizations off), so it means the same on any host.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxpress
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxpress.irpasses.core import PassOptionError
from onnxpress.irpasses.quant.cpu_target import integer_target
from onnxpress.tools import cpu_emulation


def relu_mlp(k: int = 128, hidden: int = 256, n: int = 64, seed: int = 0) -> onnx.ModelProto:
    """x -> MatMul -> Relu -> MatMul: the second MatMul reads large non-negative activations side by side,
    the case that saturates int16 pair sums; its weights are evenly spread and same-signed per column, so
    their pair sums add up instead of cancelling."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((k, hidden)) / np.sqrt(k)).astype(np.float32)
    w1 += np.float32(2.0 / np.sqrt(k))  # mostly positive pre-activations: few zeros after the Relu
    w2 = (rng.uniform(0.8, 1.0, (hidden, n)) * np.where(np.arange(n) % 2, 1.0, -1.0) / hidden).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes, "relu_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, n])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def inputs(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 2.0, (count, 1, 16, 128)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def float_reference(model: Path, x: np.ndarray) -> np.ndarray:
    """The quantized graph computed in float (no graph optimization: Q/DQ as written, no integer kernel)."""
    from onnxpress.backends.ort.runner import make_session

    session = make_session(str(model), optimization="disable", threads=1)
    return np.stack([session.run(None, {"x": sample})[0] for sample in x])


def integer_weights(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(codes, zero point) of the weights onnxruntime's integer kernels read: MatMulInteger's B, and the int8
    DequantizeLinear weights of Q/DQ sites."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type == "MatMulInteger":
            found[node.name] = (inits[node.input[1]], inits[node.input[3]])
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].dtype == np.int8:
            found[node.name] = (inits[node.input[0]], np.zeros(1, np.int8))
    return found


@pytest.mark.parametrize("pipeline", ["dynamic-quant{min_elements=16}", "qdq{min_macs=0,min_intensity=0}"])
def test_portable_weights_cannot_saturate_and_vnni_keeps_the_full_range(pipeline: str, tmp_path: Path) -> None:
    """Portable: static Q/DQ weights within +-64 (u8 x s8 pairs fit in int16), dynamic MatMulInteger weights as
    uint8 with zero point 128 (u8 x u8 is computed in 16-bit products: full 8 bits, no saturation). VNNI:
    int8 within +-127 everywhere."""
    x = inputs(4)
    seen = {}
    for cpu in ("portable", "vnni"):
        out, report = onnxpress.optimize(relu_mlp(), pipeline, samples={"x": x}, cpu=cpu, verify="off")
        weights = integer_weights(out)
        assert len(weights) == 2, weights.keys()
        dtypes = {codes.dtype.name for codes, _ in weights.values()}
        widest = max(int(np.abs(codes.astype(np.int16) - zero.astype(np.int16)[None, :] if zero.size > 1 else codes.astype(np.int16)).max())
                     for codes, zero in weights.values())
        seen[cpu] = (dtypes, widest)
        assert report.quantization["cpu"]["cpu"] == cpu
    if pipeline.startswith("dynamic"):
        assert seen == {"portable": ({"uint8"}, 127), "vnni": ({"int8"}, 127)}
    else:
        assert seen == {"portable": ({"int8"}, 64), "vnni": ({"int8"}, 127)}


def test_native_follows_this_cpu_and_unknown_cpus_are_refused() -> None:
    from onnxpress.irpasses.quant.cpu_target import has_vnni

    assert integer_target("ort", "native").vnni == has_vnni()
    assert integer_target("tensorrt", "portable").weight_max == 127  # GPU tensor cores: no int16 pair sums
    with pytest.raises(PassOptionError, match="cpu='avx9'"):
        onnxpress.optimize(relu_mlp(), "dynamic-quant", cpu="avx9")


def test_cli_says_which_cpu_was_assumed(tmp_path: Path) -> None:
    import json

    from onnxpress.tools.cli import main

    model, data, report = tmp_path / "m.onnx", tmp_path / "x.npz", tmp_path / "r.json"
    onnx.save(relu_mlp(), model)
    np.savez(data, x=inputs(4))
    assert main(["opt", str(model), "-o", str(tmp_path / "q.onnx"), "-p", "dynamic-quant{min_elements=16}", "--calib", str(data),
                 "--cpu", "no-vnni", "--report", str(report), "-q"]) == 0
    assumed = json.loads(report.read_text())["report"]["quantization"]["cpu"]
    assert assumed["weight_max"] == 64 and "no VNNI" in assumed["assumed"]


@pytest.fixture(scope="module")
def emulated() -> None:
    """qemu's AVX2 CPU; under CI (tools/dev installs qemu-user) its absence fails the test."""
    if cpu_emulation.emulator() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("qemu-x86_64 is missing under CI (tools/dev installs Debian's qemu-user)")
        pytest.skip("qemu-x86_64 not installed: apt-get install qemu-user")
    features = cpu_emulation.emulated_features()
    assert features.get("AVX2") and not features.get("AVX512VNNI") and not features.get("AVX512F"), features


@pytest.mark.parametrize("pipeline", ["dynamic-quant{min_elements=16}", "qdq{min_macs=0,min_intensity=0}"])
def test_on_a_cpu_without_vnni_portable_matches_its_float_reference_and_vnni_form_does_not(
    pipeline: str, emulated: None, tmp_path: Path
) -> None:
    """On the emulated AVX2 CPU, onnxruntime's integer kernels reproduce the portable model's own float
    computation; the full-range (cpu=vnni) model saturates there, which shows the check can fail."""
    calibration, held_out = inputs(8), inputs(6, seed=2)
    agreement = {}
    for cpu in ("portable", "vnni"):
        out, _ = onnxpress.optimize(relu_mlp(), pipeline, samples={"x": calibration}, cpu=cpu, verify="off")
        path = tmp_path / f"{cpu}.onnx"
        onnxpress.save(out, path, max_ir_version=10)
        got = np.stack([outputs[0] for outputs in cpu_emulation.run_emulated(path, [{"x": x} for x in held_out])])
        agreement[cpu] = cosine(got, float_reference(path, held_out))
    assert agreement["portable"] > 0.9999, agreement
    assert agreement["vnni"] < 0.999, agreement  # the saturation portable avoids

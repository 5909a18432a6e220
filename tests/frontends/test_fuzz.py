"""Malformed input (issue 20): a short deterministic fuzz run, and the saved repro of every bug class it found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxpress
import pytest
from onnxpress.frontends.sample_data import NpzSamples, random_inputs, validated
from onnxpress.irpasses.core import DataError, InvalidModelError
from onnxpress.tools import fuzz
from onnxpress.tools.cli import main

REPRO = Path(__file__).parent / "repro"


def _one_error_line(capsys: pytest.CaptureFixture[str], *names: str) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "internal error" not in err and "Traceback" not in err, err
    assert all(name in errors[0] for name in names), errors[0]
    return errors[0]


def test_short_fuzz_run_finds_no_leak_hang_or_crash(tmp_path: Path) -> None:
    report = fuzz.fuzz_models(count=300, seed=0, timeout=60, out=tmp_path)
    assert report.cases == 300
    assert report.bad == 0, [(f["file"], f["mutation"], f.get("stages")) for f in report.findings if f["verdict"] in fuzz.FAILURES]
    assert report.verdicts["refused"] > 100  # the mutations do break models, and each is refused by name


def test_short_sample_fuzz_run_finds_no_leak_hang_or_crash(tmp_path: Path) -> None:
    report = fuzz.fuzz_samples(count=100, seed=0, timeout=60, out=tmp_path)
    assert report.bad == 0, report.findings
    assert report.verdicts["refused"] > 50


# ----- models ---------------------------------------------------------------------------------------
def test_dangling_input_is_refused_by_name_and_onnx_ir_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidModelError, match=r"input 0 \('nope'\) of Gemm node"):
        onnxpress.load((REPRO / "dangling_input.onnx").read_bytes())
    assert capfd.readouterr().err == ""  # onnx-ir's "cannot be found in any scope" went to stderr before


def test_dangling_input_passes_with_allow_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(UserWarning, match="loaded as asked"):
        model = onnxpress.load(REPRO / "dangling_input.onnx", allow_invalid=True)
    with pytest.warns(UserWarning):
        onnxpress.optimize(model, "cleanup", verify="off")  # the input's own problems are not blamed on a pass
    assert main(["opt", str(REPRO / "dangling_input.onnx"), "-o", str(tmp_path / "a.onnx"), "-q"]) == 2
    _one_error_line(capsys, "'nope'", "Gemm")
    assert main(["opt", str(REPRO / "dangling_input.onnx"), "-o", str(tmp_path / "b.onnx"), "-q", "--allow-invalid", "--no-verify"]) == 0


def test_name_not_utf8_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidModelError, match="not valid UTF-8"):
        onnxpress.load((REPRO / "bad_utf8_name.onnx").read_bytes())
    assert main(["inspect", str(REPRO / "bad_utf8_name.onnx")]) == 2
    _one_error_line(capsys, "UTF-8")


def test_checker_survives_a_name_it_cannot_serialize() -> None:
    from onnxpress.irpasses.core.manager import _run_checker

    model = onnxpress.load(REPRO / "ir3_initializers.onnx")
    next(iter(model.graph)).name = b"bad\xff"  # what onnx-ir holds for a name that is not UTF-8
    assert _run_checker(model).startswith("FAILED: cannot be serialized")


@pytest.mark.parametrize(("name", "says"), [
    ("initializer_dims.onnx", "initializer '1' holds 320 bytes, but FLOAT [9, 10] takes 360"),
    ("initializer_dtype.onnx", "initializer '1' holds 0 values in int32_data, but BFLOAT16"),
])
def test_tensor_contradicting_its_shape_is_refused(name: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidModelError, match=r"initializer '1'"):
        onnxpress.load(REPRO / name)
    assert main(["inspect", str(REPRO / name)]) == 2
    assert says in _one_error_line(capsys)


def test_huge_declared_input_shape_is_refused_before_allocating(capsys: pytest.CaptureFixture[str]) -> None:
    model = onnxpress.load(REPRO / "huge_input_shape.onnx")
    with pytest.raises(DataError, match="too large to generate"):
        random_inputs(model)
    path = str(REPRO / "huge_input_shape.onnx")
    assert main(["compare", path, path]) == 2  # was: MemoryError, "internal error"
    _one_error_line(capsys, "'0'")


def test_ir3_model_with_constants_survives_cleanup() -> None:
    _, report = onnxpress.optimize(onnxpress.load(REPRO / "ir3_initializers.onnx"), "cleanup", verify="off")
    assert report.checker == "passed"  # was: "initializer but not in graph input" blamed on the pipeline


# ----- sample files ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "says"), [
    ("nan.npz", "array '0' holds NaN or Inf"),
    ("negative_shape.npz", "negative dimension"),
    ("huge_shape_stored.npz", "but the file holds 64"),
    ("huge_shape_compressed.npz", "but the file holds 64"),
    ("object_array.npz", "holds Python objects"),
    ("truncated.npz", "not a zip file"),
])
def test_bad_sample_file_is_a_data_error_naming_it(name: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    model = onnxpress.load(fuzz.sample_model())
    with pytest.raises(DataError, match=name.replace(".", r"\.")) as caught:
        list(validated(NpzSamples(REPRO / name), model))
    assert says in caught.value.message
    path = str(fuzz.sample_model())
    assert main(["compare", path, path, "--inputs", str(REPRO / name)]) == 2
    _one_error_line(capsys, name)


def test_sample_folder_file_with_nan_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "0.npz", x=np.array([1.0, np.inf], np.float32))
    with pytest.raises(DataError, match="array 'x' holds NaN or Inf"):
        list(NpzSamples(tmp_path))


def test_attribute_without_type_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(REPRO / "attribute_without_type.onnx")  # a bit flip in the attribute's type field (10k-case run)
    with pytest.raises(InvalidModelError, match="attribute 'kernel_shape' of ConvTranspose node '<unnamed>' has no type"):
        onnxpress.load(path)
    assert main(["compare", path, path]) == 2  # was: SerdeError, "internal error"
    _one_error_line(capsys, "kernel_shape")

"""Input specs (``--input NAME:SHAPE:DTYPE``): parsing and matching against what a model declares; no framework."""

from __future__ import annotations

import numpy as np
import pytest
from onnxpress.frontends.input_spec import InputSpec, input_specs, match_specs, parse_input_spec
from onnxpress.irpasses.core.errors import DataError


def test_parse() -> None:
    spec = parse_input_spec("serving_default_x:0:?x24x24x3:float32")
    assert spec == InputSpec("serving_default_x:0", (None, 24, 24, 3), np.dtype(np.float32))
    assert parse_input_spec("ids:batch x seq:int64").shape == ("batch", "seq")
    assert parse_input_spec("ids:1,max_len:int64").shape == (1, "max_len")
    assert parse_input_spec("x:?:?") == InputSpec("x", None, None)
    assert parse_input_spec("flag:scalar:bool").shape == ()
    assert parse_input_spec("x:-1x3:float32").text() == "x:?x3:float32"
    for bad, why in (("x24", "expected NAME:SHAPE:DTYPE"), ("x:1x2:floaty", "not a dtype"), ("x:1x-2:float32", "negative"),
                     ("x:1x2.5:float32", "not a size"), (":1x2:float32", "expected NAME")):
        with pytest.raises(DataError, match=why):
            parse_input_spec(bad)
    with pytest.raises(DataError, match="name an input twice: x"):
        input_specs(["x:1:float32", "x:2:float32"])


def test_match() -> None:
    declared = [InputSpec("x", (None, 24, 24, 3), np.dtype(np.float32)), InputSpec("mask", (None, 8), np.dtype(np.int64))]
    merged = match_specs(input_specs("x:1x?x24x3:?"), declared, "model")
    assert merged[0] == InputSpec("x", (1, 24, 24, 3), np.dtype(np.float32)) and merged[1] == declared[1]
    for spec, why in (("y:1:float32", "names no input of model; its inputs: x:\\?x24x24x3:float32, mask:\\?x8:int64"),
                      ("x:1x24x24:float32", "has rank 3, model takes rank 4"),
                      ("x:1x32x24x3:float32", "sets dimension 1 to 32, model fixes it at 24"),
                      ("mask:?x8:int32", "gives dtype int32, model takes int64")):
        with pytest.raises(DataError, match=why):
            match_specs(input_specs(spec), declared, "model")

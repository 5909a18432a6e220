"""Mutations of ONNX model files and .npz sample files, driven by a seeded ``random.Random``.

Raw mutations damage the bytes (what a bad download or disk does); structural ones edit a parsed ModelProto
(what a buggy exporter or a hostile user writes). Every mutation is a pure function of its seed, so a case
can be regenerated from (seed model, mutation, case seed) alone.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
from collections.abc import Callable

import numpy as np
import onnx

OPSETS = (1, 7, 13, 17, 25, 99)
OP_TYPES = ("Add", "Relu", "MatMul", "Conv", "Reshape", "Gather", "Concat", "If", "NoSuchOp", "Identity", "Transpose")


# ----- raw bytes ------------------------------------------------------------------------------------
def flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def delete(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randint(1, 64):]


def duplicate(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    piece = data[start:start + rng.randint(1, 256)]
    at = rng.randrange(len(data))
    return data[:at] + piece + data[at:]


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


RAW: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "flip": flip, "delete": delete, "duplicate": duplicate, "truncate": truncate,
}


# ----- structural edits of a ModelProto -------------------------------------------------------------
def _nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return list(proto.graph.node)


def dangling_input(proto: onnx.ModelProto, rng: random.Random) -> None:
    nodes = [n for n in _nodes(proto) if n.input]
    if nodes:
        node = rng.choice(nodes)
        node.input[rng.randrange(len(node.input))] = f"nope_{rng.randrange(1000)}"


def swap_op(proto: onnx.ModelProto, rng: random.Random) -> None:
    if proto.graph.node:
        rng.choice(_nodes(proto)).op_type = rng.choice(OP_TYPES)


def initializer_dims(proto: onnx.ModelProto, rng: random.Random) -> None:
    if proto.graph.initializer:
        tensor = rng.choice(list(proto.graph.initializer))
        choice = rng.randrange(4)
        if choice == 0 and tensor.dims:
            tensor.dims[rng.randrange(len(tensor.dims))] += rng.choice((-1, 1, 7))
        elif choice == 1:
            tensor.dims.append(rng.choice((0, 2, 1 << 40)))
        elif choice == 2:
            del tensor.dims[:]
        else:
            tensor.data_type = rng.choice((0, 1, 7, 8, 10, 16, 99))


def stray_attribute(proto: onnx.ModelProto, rng: random.Random) -> None:
    if proto.graph.node:
        node = rng.choice(_nodes(proto))
        value = rng.choice((1, 2.5, "text", [1, 2, 3]))
        node.attribute.append(onnx.helper.make_attribute(rng.choice(("axis", "perm", "stray", "to", "value")), value))


def set_opset(proto: onnx.ModelProto, rng: random.Random) -> None:
    version = rng.choice(OPSETS)
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = version


_UTF8_MARK = b"\x01bad-utf8"
"""Replaced, once serialized, by the same length with an invalid UTF-8 lead byte."""


def bad_utf8_name(proto: onnx.ModelProto, rng: random.Random) -> None:
    """Protobuf's Python API refuses to set invalid UTF-8, so the name is patched in the serialized bytes."""
    if proto.graph.node:
        node = rng.choice(_nodes(proto))
        node.name = (node.name or "n") + _UTF8_MARK.decode()


def duplicate_name(proto: onnx.ModelProto, rng: random.Random) -> None:
    nodes = [n for n in _nodes(proto) if n.output]
    if len(nodes) >= 2:
        a, b = rng.sample(nodes, 2)
        b.output[0] = a.output[0]
    elif nodes and proto.graph.input:
        nodes[0].output[0] = proto.graph.input[0].name


def cycle(proto: onnx.ModelProto, rng: random.Random) -> None:
    """The first node that has inputs reads an output of a later node (or its own)."""
    nodes = [n for n in _nodes(proto) if n.output]
    if not nodes:
        return
    i = rng.randrange(len(nodes))
    j = rng.randrange(i, len(nodes))
    if nodes[i].input:
        nodes[i].input[0] = nodes[j].output[0]
    else:
        nodes[i].input.append(nodes[j].output[0])


def value_info_type(proto: onnx.ModelProto, rng: random.Random) -> None:
    """A graph input/output or value_info declares another element type or rank."""
    values = list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info)
    if values:
        value = rng.choice(values)
        if rng.random() < 0.5:
            value.type.tensor_type.elem_type = rng.choice((0, 1, 6, 7, 9, 99))
        else:
            value.type.tensor_type.shape.dim.add().dim_value = rng.choice((-5, 0, 3, 1 << 50))


STRUCTURAL: dict[str, Callable[[onnx.ModelProto, random.Random], None]] = {
    "dangling-input": dangling_input, "swap-op": swap_op, "initializer-dims": initializer_dims,
    "stray-attribute": stray_attribute, "set-opset": set_opset, "bad-utf8-name": bad_utf8_name,
    "duplicate-name": duplicate_name, "cycle": cycle, "value-info-type": value_info_type,
}


def mutate_model(seed: onnx.ModelProto, seed_bytes: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutation (raw about a third of the time), as (its name, the mutated file's bytes)."""
    if rng.random() < 0.33:
        name = rng.choice(sorted(RAW))
        return name, RAW[name](seed_bytes, rng)
    name = rng.choice(sorted(STRUCTURAL))
    proto = onnx.ModelProto()
    proto.CopyFrom(seed)
    STRUCTURAL[name](proto, rng)
    data = proto.SerializeToString()
    if name == "bad-utf8-name":
        data = data.replace(_UTF8_MARK, b"\xff" + _UTF8_MARK[1:])
    return name, data


# ----- sample files ---------------------------------------------------------------------------------
def npz_bytes(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _npy_with_header(shape: tuple[int, ...], dtype: str, payload: bytes) -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def _zip(members: dict[str, bytes], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name + ".npy", data)
    return buffer.getvalue()


def mutate_samples(arrays: dict[str, np.ndarray], rng: random.Random) -> tuple[str, bytes]:
    """A damaged .npz for a model whose valid samples are ``arrays`` (axis 0 = samples)."""
    compressed = rng.random() < 0.4
    kind = rng.choice(("flip", "truncate", "nan", "inf", "object", "huge-shape", "negative-shape", "dtype", "rank", "empty", "valid"))
    name = rng.choice(sorted(arrays))
    arrays = dict(arrays)
    if kind in ("flip", "truncate"):
        return kind, RAW[kind](npz_bytes(arrays, compressed), rng)
    if kind in ("nan", "inf") and arrays[name].dtype.kind == "f":
        array = arrays[name].copy()
        array.reshape(-1)[rng.randrange(array.size)] = np.nan if kind == "nan" else np.inf
        arrays[name] = array
    elif kind == "object":
        return kind, _zip({name: _object_npy()}, compressed)
    elif kind in ("huge-shape", "negative-shape"):
        shape = (1 << 40, 1 << 20) if kind == "huge-shape" else (-3, 2)
        return kind, _zip({name: _npy_with_header(shape, "<f4", b"\0" * 64)}, compressed)
    elif kind == "dtype":
        arrays[name] = arrays[name].astype(rng.choice((np.float64, np.int8, np.complex64, "U3")))
    elif kind == "rank":
        arrays[name] = arrays[name][..., None]
    elif kind == "empty":
        arrays[name] = arrays[name][:0]
    return kind, npz_bytes(arrays, compressed)


def _object_npy() -> bytes:
    """An .npy holding a pickled object array (never unpickled by the reader under test)."""
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buffer.getvalue()

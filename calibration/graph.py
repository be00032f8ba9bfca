"""ONNX graph helpers shared by the FP16 and INT8 passes: tensor types, the dense layers, and the
strong-typing check.

Strong typing (TensorRT 11, and TensorRT 10 with ``STRONGLY_TYPED``) takes every tensor's type
from the ONNX file, so a precision variant must be type-correct by construction: the float inputs
of every op share one type (a Cast sits wherever two precisions meet), Q/DQ scales have the type
of the tensor they (de)quantize, and the ``locore::SelectiveScan`` node follows its contract
(:mod:`locore.scan_spec`: ``x``, ``dt``, ``B``, ``C``, ``z`` in x's type, ``A``, ``D`` and
``dt_bias`` FP32). :func:`strong_typing_problems` checks exactly that.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from locore import scan_spec as spec

log = logging.getLogger(__name__)

__all__ = [
    "DenseLayer",
    "FLOAT",
    "FLOAT16",
    "dense_layers",
    "is_scan_node",
    "strong_typing_problems",
    "tensor_types",
]

FLOAT = 1  # onnx.TensorProto.FLOAT
FLOAT16 = 10  # onnx.TensorProto.FLOAT16
_FLOATS = {FLOAT, FLOAT16, 11, 16}  # float, float16, double, bfloat16
_TYPE_NAMES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16", 3: "int8", 2: "uint8"}

# Inputs that are not "data" of the op's type T (indices, shapes, axes, conditions, pads...):
# op_type -> input positions to ignore in the same-type rule. Q/DQ and the scan are special.
_NON_DATA_INPUTS: dict[str, set[int]] = {
    "Reshape": {1},
    "Expand": {1},
    "Tile": {1},
    "Gather": {1},
    "GatherElements": {1},
    "GatherND": {1},
    "ScatterElements": {1},
    "ScatterND": {1},
    "Slice": {1, 2, 3, 4},
    "Split": {1},
    "Squeeze": {1},
    "Unsqueeze": {1},
    "Pad": {1, 3},
    "Where": {0},
    "CumSum": {1},
    "ReduceMean": {1},
    "ReduceSum": {1},
    "ReduceMax": {1},
    "ReduceMin": {1},
    "ReduceL2": {1},
    "ReduceProd": {1},
    "Trilu": {1},
    "TopK": {1},
    "Resize": {1, 2, 3},
    "Pow": {1},  # the exponent may have its own type
}
_ANY_INPUT_TYPE = {"Cast", "Shape", "Size", "ConstantOfShape", "CastLike", "NonZero", "Not"}


def type_name(elem_type: int) -> str:
    return _TYPE_NAMES.get(elem_type, f"onnx type {elem_type}")


def is_scan_node(node: Any) -> bool:
    """A ``locore::SelectiveScan`` node (plugin flavor)."""
    return node.domain == spec.DOMAIN and node.op_type == spec.OP_TYPE


def tensor_types(proto: Any) -> dict[str, int]:
    """Element type of every named tensor of ``proto``'s main graph (inputs, initializers,
    Constant outputs, node outputs), from ONNX shape inference; a SelectiveScan output gets the
    type of its ``x`` (the node has no schema without the exporter)."""
    import onnx

    types: dict[str, int] = {}
    graph = proto.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    # Shape inference, repeated with the scan outputs typed until nothing new is learnt.
    work = onnx.ModelProto()
    work.CopyFrom(proto)
    for _ in range(4):
        known = dict(types)
        work.graph.ClearField("value_info")
        for node in work.graph.node:
            if is_scan_node(node) and node.input[0] in known:
                for out in node.output:
                    known.setdefault(out, known[node.input[0]])
        for name, elem in known.items():
            if name not in {i.name for i in work.graph.initializer}:
                work.graph.value_info.append(onnx.helper.make_tensor_value_info(name, elem, None))
        inferred = onnx.shape_inference.infer_shapes(work, strict_mode=False)
        for value in (*inferred.graph.value_info, *inferred.graph.output):
            if value.type.tensor_type.elem_type:
                known.setdefault(value.name, value.type.tensor_type.elem_type)
        for node in work.graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        known.setdefault(node.output[0], attr.t.data_type)
        if len(known) == len(types):
            break
        types = known
    return types


@dataclass(frozen=True)
class DenseLayer:
    """A dense layer of the exported graph: ``MatMul(activation, weight)`` with the weight an
    initializer [K, N] (torch's Linear, transposed by the exporter), optionally followed by a
    bias ``Add``. ``name`` is the MatMul node's name."""

    name: str
    activation: str
    weight: str
    output: str


def dense_layers(proto: Any) -> list[DenseLayer]:
    """The dense layers (MatMul or Gemm with a 2-D initializer weight) of ``proto``'s graph.

    In a re-ranker these are the descriptor and match projections, every mixer's in/out
    projection and the classifier; the scan's MatMuls (portable flavor) multiply two
    activations and are not dense layers."""
    inits = {i.name: i for i in proto.graph.initializer}
    out: list[DenseLayer] = []
    for node in proto.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        if node.op_type == "Gemm" and any(
            a.name == "transB" and a.i for a in node.attribute
        ):  # pragma: no cover - the exporter writes MatMul
            continue
        weight = inits.get(node.input[1])
        if weight is None or len(weight.dims) != 2 or node.input[0] in inits:
            continue
        out.append(DenseLayer(node.name, node.input[0], node.input[1], node.output[0]))
    return out


def _label(node: Any, index: int) -> str:
    return f"{node.op_type} {node.name or f'#{index}'}"


def strong_typing_problems(proto: Any, types: dict[str, int] | None = None) -> list[str]:
    """What breaks strong typing in ``proto`` (empty when nothing does):

    - an op whose float data inputs have different types (Cast, Shape and the index/shape/axes
      inputs of each op are exempt);
    - a QuantizeLinear whose scale type differs from its input's, a DequantizeLinear whose
      scale type differs from the float its consumers read, a nonzero zero point;
    - a SelectiveScan node whose ``A``, ``D`` or ``dt_bias`` is not FP32, or whose other inputs
      do not share x's type.
    """
    import onnx
    from onnx import numpy_helper

    types = types if types is not None else tensor_types(proto)
    inits = {i.name: i for i in proto.graph.initializer}
    problems: list[str] = []
    for index, node in enumerate(proto.graph.node):
        label = _label(node, index)
        if is_scan_node(node):
            x_type = types.get(node.input[0])
            for pos, name in enumerate(node.input):
                if not name:
                    continue
                tensor = spec.INPUTS[pos]
                want = FLOAT if not tensor.same_dtype_as_x else x_type
                got = types.get(name)
                if got != want:
                    problems.append(
                        f"{label}: input {pos} ({tensor.name}) is {type_name(got or 0)}, expected "
                        f"{type_name(want or 0)} (plugin version {spec.PLUGIN_VERSION})"
                    )
            continue
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale_type = types.get(node.input[1])
            if node.op_type == "QuantizeLinear" and types.get(node.input[0]) != scale_type:
                problems.append(
                    f"{label}: scale is {type_name(scale_type or 0)} but the input is "
                    f"{type_name(types.get(node.input[0]) or 0)}"
                )
            if len(node.input) > 2 and node.input[2] in inits:
                zp = numpy_helper.to_array(inits[node.input[2]])
                if zp.any():
                    problems.append(f"{label}: zero point is not 0 (TensorRT is symmetric only)")
            continue
        if node.op_type in _ANY_INPUT_TYPE or node.domain not in ("", "ai.onnx"):
            continue
        skip = _NON_DATA_INPUTS.get(node.op_type, set())
        data = [
            (pos, name, types.get(name))
            for pos, name in enumerate(node.input)
            if name and pos not in skip and types.get(name) in _FLOATS
        ]
        kinds = {t for _, _, t in data}
        if len(kinds) > 1:
            listed = ", ".join(f"{name} {type_name(t or 0)}" for _, name, t in data)
            problems.append(f"{label}: inputs mix float types ({listed})")
    del onnx
    return problems


def consumers(proto: Any) -> dict[str, list[Any]]:
    """tensor name -> the nodes that read it."""
    out: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for name in node.input:
            if name:
                out.setdefault(name, []).append(node)
    return out


def unique_name(taken: set[str], base: str) -> str:
    """``base``, or ``base_1``, ``base_2``... not in ``taken`` (which it joins)."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def all_names(proto: Any) -> set[str]:
    graph = proto.graph
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    names |= {i.name for i in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        if node.name:
            names.add(node.name)
    return names


def scan_nodes(proto: Any) -> Iterable[Any]:
    return (n for n in proto.graph.node if is_scan_node(n))

"""FP16 variant of an exported re-ranker: FP16 dense layers, FP32 scan state, norms and reductions.

The pass rewrites an FP32 ONNX graph (either flavor) so that TensorRT's strongly typed builder
(and ONNX Runtime) runs:

- in FP16: every dense layer (``MatMul`` with an initializer weight, its bias ``Add``; the
  weights are stored FP16) and the element-wise / data-movement ops whose inputs all come from
  FP16 ops (``Split`` of the in-projection, ``silu``, reshapes, the sum of the two scan outputs);
  the ``locore::SelectiveScan`` node's ``x``, ``dt``, ``B``, ``C``, ``z`` and ``y`` (plugin
  version 2, which computes its state in FP32);
- in FP32: the portable flavor's scan (its ``MatMul`` of two activations are the state's
  accumulations; ``CumSum``, ``Exp``), the scan's ``A``, ``D``, ``dt_bias``, softplus, every
  norm and reduction (``Pow``, ``ReduceMean``, ``Sqrt``, ``Reciprocal``, ``ReduceL2``...),
  the residual stream and the aggregation; an element-wise op with an FP32 input or a float
  constant (other than a dense layer's bias) stays FP32, as torch's type promotion would.

A ``Cast`` is placed on every edge where the two precisions meet (one per tensor and type), so
no op mixes float types; graph inputs and outputs keep their FP32 types (the runtime packs the
same feeds). :func:`locore.calibration.graph.strong_typing_problems` checks the result.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from locore import scan_spec as spec
from locore.calibration.graph import (
    _NON_DATA_INPUTS,
    FLOAT,
    FLOAT16,
    all_names,
    dense_layers,
    is_scan_node,
    tensor_types,
    unique_name,
)

log = logging.getLogger(__name__)

__all__ = ["FP32_OPS", "NEUTRAL_OPS", "convert_fp16"]

FP32_OPS = frozenset(
    {
        "CumSum", "Exp", "Log", "Softplus", "Softmax", "LogSoftmax", "Pow", "Sqrt", "Reciprocal",
        "ReduceMean", "ReduceSum", "ReduceL2", "ReduceMax", "ReduceMin", "ReduceProd",
        "ReduceSumSquare", "ReduceLogSumExp", "LayerNormalization", "Erf", "RMSNormalization",
    }
)  # fmt: skip
"""Op types that always run in FP32: norms, reductions, exponentials, the scan's cumulative sums."""

NEUTRAL_OPS = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sigmoid", "Tanh", "Relu", "Where", "Concat",
        "Reshape", "Transpose", "Split", "Slice", "Squeeze", "Unsqueeze", "Expand", "Gather",
        "GatherND", "GatherElements", "ScatterElements", "Pad", "Clip", "Identity", "Flatten",
        "Tile", "Max", "Min", "Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual", "Trilu",
    }
)  # fmt: skip
"""Element-wise and data-movement ops: FP16 when every float input comes from an FP16 op."""


def _float_data_inputs(node: Any, types: dict[str, int]) -> list[tuple[int, str]]:
    skip = _NON_DATA_INPUTS.get(node.op_type, set())
    return [
        (pos, name)
        for pos, name in enumerate(node.input)
        if name and pos not in skip and types.get(name) == FLOAT
    ]


def _plan(proto: Any, types: dict[str, int]) -> dict[int, dict[str, int]]:
    """For every node index whose float inputs need a precision: input name -> FP16/FP32.

    Also returns (through ``types``-like bookkeeping) nothing else: output precisions follow the
    inputs (or FP16 for the scan's y), see :func:`convert_fp16`."""
    graph = proto.graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    dense = {d.name: d for d in dense_layers(proto)}
    dense_outputs = {d.output for d in dense.values()}
    precision: dict[str, int] = {}  # float tensor produced by a node or a graph input -> type
    for value in graph.input:
        if types.get(value.name) == FLOAT:
            precision[value.name] = FLOAT
    plan: dict[int, dict[str, int]] = {}
    for index, node in enumerate(graph.node):
        inputs = _float_data_inputs(node, types)
        float_outputs = [o for o in node.output if types.get(o) == FLOAT]
        if node.op_type == "Constant":
            continue
        if is_scan_node(node):
            want = {}
            for pos, name in enumerate(node.input):
                if name:
                    want[name] = FLOAT if not spec.INPUTS[pos].same_dtype_as_x else FLOAT16
            plan[index] = want
            for out in float_outputs:
                precision[out] = FLOAT16
            continue
        if node.op_type == "Cast":  # keeps its `to`: a source of that type
            for out in float_outputs:
                precision[out] = FLOAT
            continue
        variable = [name for _, name in inputs if name not in constants]
        if node.op_type in ("MatMul", "Gemm") and node.name in dense:
            chosen = FLOAT16
        elif node.op_type in NEUTRAL_OPS:
            has_constant = any(name in constants for _, name in inputs)
            is_bias = node.op_type == "Add" and any(n in dense_outputs for n in variable)
            all_half = bool(variable) and all(precision.get(n) == FLOAT16 for n in variable)
            chosen = FLOAT16 if all_half and (is_bias or not has_constant) else FLOAT
        else:  # FP32_OPS, activation x activation MatMul, anything unknown: FP32
            chosen = FLOAT
        plan[index] = {name: chosen for _, name in inputs}
        for out in float_outputs:
            precision[out] = chosen
    return plan


def convert_fp16(proto: Any) -> Any:
    """The FP16 variant of the FP32 ModelProto ``proto`` (a new ModelProto; see the module
    docstring). Raises ValueError when ``proto`` already holds FP16 tensors."""
    import onnx
    from onnx import helper, numpy_helper

    types = tensor_types(proto)
    if FLOAT16 in types.values():
        raise ValueError(
            "the model already holds float16 tensors; convert the FP32 export (`locore export`)"
        )
    plan = _plan(proto, types)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    taken = all_names(out)
    inits = {i.name: i for i in graph.initializer}
    producer_type: dict[str, int] = {}  # float tensors in the new graph -> type
    for name, elem in types.items():
        if elem == FLOAT:
            producer_type[name] = FLOAT
    cast_cache: dict[tuple[str, int], str] = {}
    new_inits: list[Any] = []
    nodes: list[Any] = []

    def as_type(name: str, want: int) -> str:
        if producer_type.get(name, FLOAT) == want:
            return name
        key = (name, want)
        if key in cast_cache:
            return cast_cache[key]
        suffix = "fp16" if want == FLOAT16 else "fp32"
        if name in inits:
            array = numpy_helper.to_array(inits[name])
            converted = unique_name(taken, f"{name}_{suffix}")
            dtype = np.float16 if want == FLOAT16 else np.float32
            new_inits.append(numpy_helper.from_array(array.astype(dtype), converted))
        else:
            converted = unique_name(taken, f"{name}_{suffix}")
            nodes.append(
                helper.make_node(
                    "Cast",
                    [name],
                    [converted],
                    to=want,
                    name=unique_name(taken, f"Cast_{converted}"),
                )
            )
        producer_type[converted] = want
        cast_cache[key] = converted
        return converted

    for index, node in enumerate(graph.node):
        want = plan.get(index)
        if want:
            for pos, name in enumerate(node.input):
                if name in want:
                    node.input[pos] = as_type(name, want[name])
        if index in plan or is_scan_node(node):
            chosen = set(want.values()) if want else set()
            out_type = (
                FLOAT16 if is_scan_node(node) else (chosen.pop() if len(chosen) == 1 else FLOAT)
            )
            for o in node.output:
                if types.get(o) == FLOAT:
                    producer_type[o] = out_type
        nodes.append(node)
    # Graph outputs keep their declared FP32 type.
    for value in graph.output:
        if types.get(value.name) == FLOAT and producer_type.get(value.name) == FLOAT16:
            inner = unique_name(taken, f"{value.name}_fp16")
            for node in nodes:
                for pos, name in enumerate(node.output):
                    if name == value.name:
                        node.output[pos] = inner
                for pos, name in enumerate(node.input):
                    if name == value.name:
                        node.input[pos] = inner
            nodes.append(helper.make_node("Cast", [inner], [value.name], to=FLOAT))
    # Dense weights become FP16 in place where nothing reads them in FP32 any more.
    used = {name for node in nodes for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + [i for i in new_inits if i.name in used])
    graph.ClearField("value_info")
    halves = sum(1 for t in producer_type.values() if t == FLOAT16)
    log.info("fp16: %d float16 tensors, %d casts", halves, sum(n.op_type == "Cast" for n in nodes))
    return out

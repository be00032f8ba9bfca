"""SelectiveScan as one torch custom op, exported as one ONNX node ``locore::SelectiveScan``.

The plugin flavor of the ONNX export swaps the model's scan for :func:`plugin_scan`; eagerly it
computes :func:`~locore.model.selective_scan_chunked`, and the exporter's translation table turns
each call into a single node whose domain, op type, input order and attributes are those of
:mod:`locore.scan_spec` (D and dt_bias are zeros when the model has none, so the node always has
7 inputs, or 8 with the gate z). Plugin version 2: A, D and dt_bias enter the node in float32
whatever x's dtype (``scan_spec.WEIGHT_INPUTS``); the other inputs are cast to x's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from locore import scan_spec as spec
from locore.model.selective_scan import ScanArgs, scan_entry_point, selective_scan_chunked

# ONNX tensor types of the spec's numpy dtype names.
_ONNX_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)"}


@torch.library.custom_op("locore::selective_scan", mutates_args=())
def _selective_scan_op(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    dt_bias: Tensor,
    z: Tensor | None,
    dt_softplus: int,
    reverse: int,
    chunk_size: int,
) -> Tensor:
    return selective_scan_chunked(
        x,
        dt,
        A,
        B,
        C,
        D=D,
        z=z,
        dt_bias=dt_bias,
        dt_softplus=bool(dt_softplus),
        reverse=bool(reverse),
        chunk_size=chunk_size,
    )


@_selective_scan_op.register_fake
def _(x, dt, A, B, C, D, dt_bias, z, dt_softplus, reverse, chunk_size):  # noqa: N803
    return torch.empty_like(x)


@scan_entry_point
def plugin_scan(args: ScanArgs) -> Tensor:
    """Same signature as ``selective_scan_ref``; one custom op call (one ONNX node)."""
    if args.variant != "mamba2":
        raise NotImplementedError("the plugin flavor exports the mamba2 variant")
    x = args.x
    heads = x.shape[2]
    f32 = torch.float32  # plugin version 2: the weights stay FP32 whatever x's dtype
    D = args.D if args.D is not None else x.new_zeros(heads, dtype=f32)
    dt_bias = args.dt_bias if args.dt_bias is not None else x.new_zeros(heads, dtype=f32)
    D, dt_bias, A = D.to(f32), dt_bias.to(f32), args.A.to(f32)
    z = None if args.z is None else args.z.to(x.dtype)
    return _selective_scan_op(
        x, args.dt.to(x.dtype), A, args.B.to(x.dtype), args.C.to(x.dtype), D, dt_bias, z,
        int(args.dt_softplus), int(args.reverse), int(args.chunk_size),
    )  # fmt: skip


def register_onnx_schema() -> None:
    """Register the ``locore::SelectiveScan`` schema (from :mod:`locore.scan_spec`) with onnx,
    once, so that the exporter can build the node and ``onnx.checker`` can check it."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has(spec.OP_TYPE, spec.DOMAIN):
        return
    fp = OpSchema.FormalParameter
    optional = OpSchema.FormalParameterOption.Optional
    weight_types = {d for t in spec.INPUTS if not t.same_dtype_as_x for d in t.dtypes}
    if weight_types != {"float32"}:  # pragma: no cover - a future version
        raise NotImplementedError(
            f"the schema below types the weights W = float, got {weight_types}"
        )

    def formal(t: spec.ScanTensor) -> OpSchema.FormalParameter:
        kind = "T" if t.same_dtype_as_x else "W"
        return fp(t.name, kind, param_option=optional) if t.optional else fp(t.name, kind)

    inputs = [formal(t) for t in spec.INPUTS]
    attr_types = {"string": OpSchema.AttrType.STRING, "int": OpSchema.AttrType.INT}
    attributes = [
        OpSchema.Attribute(a.name, attr_types[a.type], a.description, required=a.required)
        for a in spec.ATTRIBUTES
    ]
    schema = OpSchema(
        spec.OP_TYPE,
        spec.DOMAIN,
        spec.OPSET_VERSION,
        "Selective state-space scan (docs/design.md section 3); y has the shape and type of x.",
        inputs=inputs,
        outputs=[fp(spec.OUTPUT.name, "T")],
        type_constraints=[
            ("T", [_ONNX_TYPES[d] for d in spec.IO_DTYPES], "the I/O dtype, that of x"),
            ("W", [_ONNX_TYPES["float32"]], "A, D and dt_bias: float32 (plugin version 2)"),
        ],
        attributes=attributes,
    )
    onnx.defs.register_schema(schema)


def translation_table() -> dict:
    """Custom translation for ``torch.onnx.export(dynamo=True)``: the ops -> one locore node."""
    import onnxscript

    register_onnx_schema()
    selective_scan = onnxscript.values.Opset(spec.DOMAIN, spec.OPSET_VERSION)[spec.OP_TYPE]

    def scan(x, dt, A, B, C, D, dt_bias, z, dt_softplus: int, reverse: int, chunk_size: int):  # noqa: N803
        inputs = (x, dt, A, B, C, D, dt_bias) + (() if z is None else (z,))
        attrs = spec.node_attributes(
            variant="mamba2", dt_softplus=dt_softplus, reverse=reverse, chunk_size=chunk_size
        )
        return selective_scan(*inputs, **attrs)

    return {torch.ops.locore.selective_scan.default: scan}

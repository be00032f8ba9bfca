"""SelectiveScan as one torch custom op, exported as one ONNX node ``locore::SelectiveScan``.

The plugin flavor of the ONNX export swaps the model's scan for :func:`plugin_scan`; eagerly it
computes :func:`~locore.model.selective_scan_chunked`, and the exporter's translation table turns
each call into a single node in domain ``locore`` with the attributes of DESIGN.md §4. Inputs
follow the plugin's fixed order: x, dt, A, B, C, D, dt_bias[, z] (D and dt_bias are zeros when
the model has none, so the node always has 7 or 8 inputs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from locore.model.selective_scan import selective_scan_chunked

DOMAIN = "locore"
OP_TYPE = "SelectiveScan"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
INPUT_ORDER = ("x", "dt", "A", "B", "C", "D", "dt_bias", "z")


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


def plugin_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    reverse: bool = False,
    variant: str = "mamba2",
    chunk_size: int = 64,
) -> Tensor:
    """Same signature as ``selective_scan_ref``; one custom op call (one ONNX node)."""
    if variant != "mamba2":
        raise NotImplementedError("the plugin flavor exports the mamba2 variant")
    heads = x.shape[2]
    D = D if D is not None else x.new_zeros(heads)
    dt_bias = dt_bias if dt_bias is not None else x.new_zeros(heads)
    D, dt_bias, A = D.to(x.dtype), dt_bias.to(x.dtype), A.to(x.dtype)
    z = None if z is None else z.to(x.dtype)
    return _selective_scan_op(
        x, dt.to(x.dtype), A, B.to(x.dtype), C.to(x.dtype), D, dt_bias, z,
        int(dt_softplus), int(reverse), int(chunk_size),
    )  # fmt: skip


def register_onnx_schema() -> None:
    """Register the ``locore::SelectiveScan`` schema with onnx (once), so that the exporter can
    build the node and ``onnx.checker`` can check it. Mirrors the plugin's contract."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has(OP_TYPE, DOMAIN):
        return
    fp = OpSchema.FormalParameter
    inputs = [fp(name, "T") for name in INPUT_ORDER[:-1]]
    inputs.append(fp("z", "T", param_option=OpSchema.FormalParameterOption.Optional))
    attr = OpSchema.Attribute
    string, integer = OpSchema.AttrType.STRING, OpSchema.AttrType.INT
    schema = OpSchema(
        OP_TYPE,
        DOMAIN,
        1,
        "Selective state-space scan (DESIGN.md section 3); y has the shape and type of x.",
        inputs=inputs,
        outputs=[fp("y", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "FP32 or FP16 I/O")],
        attributes=[
            attr("variant", string, "mamba2 or mamba1", required=True),
            attr("dt_softplus", integer, "apply softplus to dt + dt_bias", required=True),
            attr("reverse", integer, "run the recurrence from the last token", required=True),
            attr("chunk_size", integer, "chunk length hint for kernels", required=True),
            attr("plugin_version", string, "TensorRT plugin version", required=False),
            attr("plugin_namespace", string, "TensorRT plugin namespace", required=False),
        ],
    )
    onnx.defs.register_schema(schema)


def translation_table() -> dict:
    """Custom translation for ``torch.onnx.export(dynamo=True)``: the ops -> one locore node."""
    import onnxscript

    register_onnx_schema()
    selective_scan = onnxscript.values.Opset(DOMAIN, 1)[OP_TYPE]

    def _attrs(dt_softplus: int, reverse: int, chunk_size: int) -> dict:
        return dict(
            variant="mamba2",
            dt_softplus=int(dt_softplus),
            reverse=int(reverse),
            chunk_size=int(chunk_size),
            plugin_version=PLUGIN_VERSION,
            plugin_namespace=PLUGIN_NAMESPACE,
        )

    def scan(x, dt, A, B, C, D, dt_bias, z, dt_softplus: int, reverse: int, chunk_size: int):  # noqa: N803
        inputs = (x, dt, A, B, C, D, dt_bias) + (() if z is None else (z,))
        return selective_scan(*inputs, **_attrs(dt_softplus, reverse, chunk_size))

    return {torch.ops.locore.selective_scan.default: scan}

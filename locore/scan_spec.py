"""The SelectiveScan contract, written once: inputs, output, attributes, enums, status codes.

Everything that names or orders a SelectiveScan input or attribute reads this module: the ONNX
exporter and schema (``locore.export.scan_op``), the ctypes binding of the CPU library
(``locore.native.binding``), the ONNX Runtime reference of the plugin
(``locore.runtime.backends.pluginref``) and the tests. The C++ side (``selectiveScan.h``,
``selectiveScanPlugin.*``) and the plugin README are checked against it by
``tests/test_scan_spec.py``. Semantics: docs/design.md §3 and ``locore.model.selective_scan``.

Dtypes (plugin version "2", :data:`PLUGIN_VERSION`, what the exporter writes): ``x``, ``dt``,
``B``, ``C``, ``z`` and the output ``y`` share one dtype, that of ``x``, FP32 or FP16; ``A``,
``D`` and ``dt_bias`` are FP32 in every precision (docs/design.md sections 3 and 5; mamba-ssm keeps
its weights FP32 too, and FP16 per-head decays lose accuracy). State and accumulation are FP32.
Version "1" (every input in x's dtype) stays registered in the plugin for engines built with it
(:data:`PLUGIN_VERSIONS`); the C ABI carries the weights' dtype in ``weightDtype``.

Symbolic dims: ``B`` batch, ``L`` sequence length, ``H`` heads and ``P`` head size (mamba2),
``Dc`` channels (mamba1, where the C ABI has ``nheads = Dc`` and ``headdim = 1``), ``G`` groups
(divides ``H``/``Dc``), ``N`` state size.

Standard library only: the torch-free runtime imports it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ABI_VERSION",
    "ABI_VERSION_FUNCTION",
    "ATTRIBUTES",
    "CPU_ENTRY_POINT",
    "DOMAIN",
    "DType",
    "INPUTS",
    "INPUT_NAMES",
    "IO_DTYPES",
    "MAX_INPUTS",
    "MIN_INPUTS",
    "OPSET_VERSION",
    "OP_TYPE",
    "OUTPUT",
    "PARAMS_DIMS",
    "PARAMS_FIELDS",
    "PARAMS_STRUCT",
    "PLUGIN_CONFIG_FILE",
    "PLUGIN_NAME",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "PLUGIN_VERSIONS",
    "WEIGHT_INPUTS",
    "STATUS_STRING_FUNCTION",
    "ScanAttribute",
    "ScanTensor",
    "Status",
    "VARIANTS",
    "Variant",
    "attribute",
    "node_attributes",
    "plugin_config_yaml",
]

# ---------------------------------------------------------------------------------------------
# names: ONNX node and TensorRT plugin

DOMAIN = "locore"
"""ONNX domain of the node (``locore::SelectiveScan``)."""
OP_TYPE = "SelectiveScan"
"""ONNX op_type of the node."""
OPSET_VERSION = 1
"""Version of the ``locore`` opset the exporter imports."""
PLUGIN_NAME = "SelectiveScan"
"""TensorRT plugin creator name (TensorRT's ONNX parser looks it up by the node's op_type)."""
PLUGIN_VERSION = "2"
"""TensorRT plugin version the exporter writes; the node's ``plugin_version`` attribute.
Version 2: ``A``, ``D`` and ``dt_bias`` FP32 whatever x's dtype."""
PLUGIN_VERSIONS: tuple[str, ...] = (PLUGIN_VERSION, "1")
"""Every version the plugin library registers: "2", and "1" (every input in x's dtype) kept for
engines built with it, as TensorRT OSS keeps old plugin versions."""
PLUGIN_NAMESPACE = "locore"
"""TensorRT plugin namespace; the node's ``plugin_namespace`` attribute. ``"locore"``, so that the
generic name ``SelectiveScan`` cannot collide with another library's plugin (the plugin library's
default, ``kSELECTIVE_SCAN_DEFAULT_PLUGIN_NAMESPACE``; a build may set another with CMake's
``LOCORE_PLUGIN_NAMESPACE``). ONNX files exported before it was set (``""``) must be re-exported."""


# ---------------------------------------------------------------------------------------------
# enums and status codes of the C ABI (selectiveScan.h: LOCORE_SCAN_<NAME>)


class DType(enum.IntEnum):
    """``LocoreScanDType``: the dtype of the I/O tensors (``dtype``) or of the weights
    (``weightDtype``) of one call (numpy name: ``name.lower()``)."""

    FLOAT32 = 0
    FLOAT16 = 1


class Variant(enum.IntEnum):
    """``LocoreScanVariant``; the ``variant`` attribute is the lower-case name."""

    MAMBA2 = 0
    MAMBA1 = 1


class Status(enum.IntEnum):
    """Status codes returned by every entry point of the C ABI."""

    OK = 0
    BAD_ARGUMENT = 1
    UNSUPPORTED = 2
    CUDA_ERROR = 3


VARIANTS: tuple[str, ...] = tuple(v.name.lower() for v in Variant)
"""Variant names, indexed by their enum value: ``("mamba2", "mamba1")``."""
IO_DTYPES: tuple[str, ...] = tuple(d.name.lower() for d in DType)
"""numpy names of the I/O dtypes, indexed by their enum value: ``("float32", "float16")``."""


# ---------------------------------------------------------------------------------------------
# inputs and output


@dataclass(frozen=True)
class ScanTensor:
    """One input (or the output) of the op.

    ``shapes``: symbolic dims per variant (keys of :data:`VARIANTS`). ``optional``: the ONNX
    node / plugin may omit it (a node has 7 or 8 inputs). ``nullable``: the C ABI accepts a NULL
    pointer (treated as zeros, or as no gating for ``z``). ``field``: the pointer's name in
    ``LocoreScanParams``. ``same_dtype_as_x``: the tensor must have x's dtype (else it has one
    of ``dtypes`` whatever x's dtype: the FP32 weights of plugin version 2).
    """

    name: str
    shapes: dict[str, tuple[str, ...]]
    description: str
    field: str
    optional: bool = False
    nullable: bool = False
    dtypes: tuple[str, ...] = IO_DTYPES
    same_dtype_as_x: bool = True

    def shape(self, variant: str) -> tuple[str, ...]:
        """Symbolic shape for ``variant`` (``"mamba2"`` or ``"mamba1"``)."""
        try:
            return self.shapes[variant]
        except KeyError:
            raise ValueError(
                f"variant must be one of {VARIANTS}, got {variant!r} (input {self.name})"
            ) from None


def _both(dims: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {"mamba2": dims, "mamba1": dims}


_X2, _X1 = ("B", "L", "H", "P"), ("B", "L", "Dc")
_PER_HEAD: dict[str, tuple[str, ...]] = {"mamba2": ("H",), "mamba1": ("Dc",)}

INPUTS: tuple[ScanTensor, ...] = (
    ScanTensor(
        "x",
        {"mamba2": _X2, "mamba1": _X1},
        "Input sequence (`u` in mamba-ssm).",
        field="x",
    ),
    ScanTensor(
        "dt",
        {"mamba2": ("B", "L", "H"), "mamba1": ("B", "L", "Dc")},
        "Step size before bias and softplus (`delta`).",
        field="dt",
    ),
    ScanTensor(
        "A",
        {"mamba2": ("H",), "mamba1": ("Dc", "N")},
        "Decay rates, negative.",
        field="A",
        dtypes=("float32",),
        same_dtype_as_x=False,
    ),
    ScanTensor(
        "B",
        _both(("B", "L", "G", "N")),
        "Input projection per group; `G` divides `H` (`Dc`).",
        field="B",
    ),
    ScanTensor(
        "C",
        _both(("B", "L", "G", "N")),
        "Output projection per group.",
        field="C",
    ),
    ScanTensor(
        "D",
        _PER_HEAD,
        "Skip term; zeros when the model has none.",
        field="D",
        nullable=True,
        dtypes=("float32",),
        same_dtype_as_x=False,
    ),
    ScanTensor(
        "dt_bias",
        _PER_HEAD,
        "Bias added to `dt`; zeros when the model has none.",
        field="dtBias",
        nullable=True,
        dtypes=("float32",),
        same_dtype_as_x=False,
    ),
    ScanTensor(
        "z",
        {"mamba2": _X2, "mamba1": _X1},
        "Optional gate: the output is multiplied by `silu(z)`.",
        field="z",
        optional=True,
        nullable=True,
    ),
)
"""The inputs in their fixed order (ONNX node, plugin, ``LocoreScanParams``)."""

INPUT_NAMES: tuple[str, ...] = tuple(t.name for t in INPUTS)
WEIGHT_INPUTS: tuple[str, ...] = tuple(t.name for t in INPUTS if not t.same_dtype_as_x)
"""The inputs that are FP32 whatever x's dtype (version 2): ``("A", "D", "dt_bias")``."""
MAX_INPUTS = len(INPUTS)
MIN_INPUTS = sum(not t.optional for t in INPUTS)

OUTPUT = ScanTensor(
    "y",
    {"mamba2": _X2, "mamba1": _X1},
    "The scan output, with the shape and data type of `x`.",
    field="y",
)


# ---------------------------------------------------------------------------------------------
# attributes (ONNX node attributes = TensorRT plugin fields)


@dataclass(frozen=True)
class ScanAttribute:
    """One node attribute.

    ``type``: ``"int"`` (ONNX INT, a kINT32 plugin field) or ``"string"`` (ONNX STRING, kCHAR).
    ``required``: required by the ONNX schema. ``plugin_field``: advertised by the creator's
    ``getFieldNames()`` and serialized with the engine (the routing attributes are not).
    ``allowed``: the allowed values, or None when a range is described in ``description``.
    """

    name: str
    type: str
    default: int | str
    description: str
    required: bool = True
    plugin_field: bool = True
    allowed: tuple[int | str, ...] | None = None


ATTRIBUTES: tuple[ScanAttribute, ...] = (
    ScanAttribute(
        "variant",
        "string",
        "mamba2",
        "`mamba2` (scalar decay per head) or `mamba1` (per-channel diagonal `A`).",
        allowed=VARIANTS,
    ),
    ScanAttribute(
        "dt_softplus",
        "int",
        0,
        "1: `dt' = softplus(dt + dt_bias)`; 0: `dt' = dt + dt_bias`.",
        allowed=(0, 1),
    ),
    ScanAttribute(
        "reverse",
        "int",
        0,
        "1: the recurrence runs from the last token to the first.",
        allowed=(0, 1),
    ),
    ScanAttribute(
        "chunk_size",
        "int",
        64,
        "Tokens per chunk, a performance hint that does not change the result; a positive integer.",
    ),
    ScanAttribute(
        "plugin_version",
        "string",
        PLUGIN_VERSION,
        "Routing attribute for TensorRT's ONNX parser: the plugin version.",
        required=False,
        plugin_field=False,
        allowed=PLUGIN_VERSIONS,
    ),
    ScanAttribute(
        "plugin_namespace",
        "string",
        PLUGIN_NAMESPACE,
        "Routing attribute for TensorRT's ONNX parser: the plugin namespace.",
        required=False,
        plugin_field=False,
    ),
)
"""The node's attributes, in the order the exporter writes them."""


def attribute(name: str) -> ScanAttribute:
    """The attribute called ``name``."""
    for attr in ATTRIBUTES:
        if attr.name == name:
            return attr
    raise KeyError(
        f"SelectiveScan has no attribute {name!r}; it has {[a.name for a in ATTRIBUTES]}"
    )


def node_attributes(**values: int | str) -> dict[str, int | str]:
    """Every attribute of a node, in :data:`ATTRIBUTES` order: ``values`` over the defaults.

    An unknown name or a value outside ``allowed`` raises ValueError.
    """
    unknown = sorted(set(values) - {a.name for a in ATTRIBUTES})
    if unknown:
        raise ValueError(
            f"unknown SelectiveScan attribute(s) {unknown}; expected {[a.name for a in ATTRIBUTES]}"
        )
    out: dict[str, int | str] = {}
    for attr in ATTRIBUTES:
        value = values.get(attr.name, attr.default)
        value = int(value) if attr.type == "int" else str(value)
        if attr.allowed is not None and value not in attr.allowed:
            raise ValueError(
                f"SelectiveScan attribute {attr.name} must be one of {list(attr.allowed)}, "
                f"got {value!r}"
            )
        out[attr.name] = value
    return out


# ---------------------------------------------------------------------------------------------
# C ABI: LocoreScanParams and entry points (selectiveScan.h)

PARAMS_STRUCT = "LocoreScanParams"
"""The parameter struct of every entry point."""
CPU_ENTRY_POINT = "locore_selective_scan_cpu"
"""``int locore_selective_scan_cpu(const LocoreScanParams*, int32_t numThreads)``."""
STATUS_STRING_FUNCTION = "locore_scan_status_string"
"""``const char* locore_scan_status_string(int status)``."""
ABI_VERSION_FUNCTION = "locore_scan_abi_version"
"""``int locore_scan_abi_version(void)``: the layout version of ``LocoreScanParams``."""
ABI_VERSION = 2
"""The ``LocoreScanParams`` layout of :data:`PARAMS_FIELDS` (2: with ``weightDtype``)."""

PARAMS_DIMS: tuple[tuple[str, str], ...] = (
    ("batch", "B"),
    ("seqlen", "L"),
    ("nheads", "H"),  # Dc for mamba1
    ("headdim", "P"),  # 1 for mamba1
    ("ngroups", "G"),
    ("dstate", "N"),
)
"""The size fields of ``LocoreScanParams``, first in the struct: (name, symbolic dim held)."""

PARAMS_FIELDS: tuple[tuple[str, str], ...] = (
    *((name, "int32") for name, _ in PARAMS_DIMS),
    ("variant", "int32"),  # Variant
    ("dtSoftplus", "int32"),  # attribute dt_softplus
    ("reverse", "int32"),  # attribute reverse
    ("chunkSize", "int32"),  # attribute chunk_size
    ("dtype", "int32"),  # DType of x, dt, B, C, z, y
    ("weightDtype", "int32"),  # DType of A, D, dt_bias (FP32 for version 2)
    *((t.field, "pointer") for t in INPUTS),
    (OUTPUT.field, "pointer"),
)
"""``LocoreScanParams`` fields in declaration order: (name, ``"int32"`` or ``"pointer"``)."""


# ---------------------------------------------------------------------------------------------
# TensorRT OSS plugin config file (plugin/<name>/<Name>_PluginConfig.yaml)

PLUGIN_CONFIG_FILE = f"{PLUGIN_NAME}_PluginConfig.yaml"
"""The plugin config file in ``plugins/selective_scan/`` (checked against this module)."""


def plugin_config_yaml() -> str:
    """The plugin's ``<Name>_PluginConfig.yaml`` in TensorRT OSS's format (name, interface, and
    per version: inputs, outputs, their ranks, attributes with types, dims, options and which
    are required), generated from this module: mamba2 ranks, plugin fields only."""
    lines = [
        "# Generated from locore/scan_spec.py (locore.scan_spec.plugin_config_yaml); do not edit.",
        "# The format of TensorRT OSS's plugin/*/*_PluginConfig.yaml. Ranks are the mamba2",
        "# variant's (mamba1: x, z and y have rank 3, A has rank 2).",
        "---",
        f"name: {PLUGIN_NAME}",
        'interface: "IPluginV3"',
        "versions:",
    ]
    fields = [a for a in ATTRIBUTES if a.plugin_field]
    types = {"int": "int32", "string": "char"}
    for version in PLUGIN_VERSIONS:
        lines += [f'  "{version}":', "    inputs:"]
        lines += [f"      - {t.name}" for t in INPUTS]
        lines += ["    outputs:", f"      - {OUTPUT.name}", "    input_dims:"]
        lines += [f"      {t.name}: {len(t.shape('mamba2'))}" for t in INPUTS]
        lines += ["    output_dims:", f"      {OUTPUT.name}: {len(OUTPUT.shape('mamba2'))}"]
        lines += ["    attributes:"] + [f"      - {a.name}" for a in fields]
        lines += ["    attribute_types:"] + [f"      {a.name}: {types[a.type]}" for a in fields]
        lines += ["    attribute_dims:"] + [f"      {a.name}: 1" for a in fields]
        lines += ["    attribute_options:"]
        for a in fields:
            if a.allowed is None:
                lines += [f"      {a.name}:", "        min: 1"]
            else:
                lines += [f"      {a.name}:"] + [f"        - {v}" for v in a.allowed]
        lines += ["    attributes_required:"]
        lines += [f"      - {a.name}" for a in fields if a.required]
    return "\n".join(lines) + "\n"

"""Plugin-flavor ONNX in ONNX Runtime on the CPU: the reference the TensorRT plugin is checked by.

A plugin-flavor model holds ``locore::SelectiveScan`` nodes (:mod:`locore.scan_spec`) that only
the TensorRT plugin implements. :func:`pluginref_session` loads such a model, rewrites those
nodes in memory into an onnxruntime-extensions Python op whose body is the SelectiveScan CPU
library (``locore.native.selective_scan_cpu``), and returns a plain
``onnxruntime.InferenceSession``. The file on disk is not changed.

The rewrite, per node: the domain becomes onnxruntime-extensions' ``ai.onnx.contrib`` (the only
domain its Python ops are served from) and the op type :data:`REFERENCE_OP_TYPE`; every input
is cast to float32 (the Python op API has no float16) and the output cast back to the type of
``x`` (``CastLike``), which is exact: the library, like the plugin, computes in float32 and
rounds the output to the I/O dtype; a node without the optional ``z`` gets an empty ``z``
(shape [0]) meaning "no gate"; a ``pluginref_threads`` attribute carries the library's thread
count. Needs ``onnx`` and ``onnxruntime-extensions``; never imports torch.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from locore import scan_spec as spec
from locore.deps import require
from locore.runtime.backends.base import check_threads

__all__ = ["PYOP_DOMAIN", "REFERENCE_OP_TYPE", "pluginref_session", "rewrite_scan_nodes"]

log = logging.getLogger(__name__)

PYOP_DOMAIN = "ai.onnx.contrib"
"""The domain onnxruntime-extensions serves Python ops from."""
REFERENCE_OP_TYPE = "LocoreSelectiveScanReference"
"""op_type of the rewritten nodes (a name of our own, so no other Python op can collide)."""
THREADS_ATTRIBUTE = "pluginref_threads"
"""Attribute added to each rewritten node: the CPU library's thread count (0 = all cores)."""

_PURPOSE = "the pluginref backend (plugin-flavor ONNX in ONNX Runtime on the CPU)"
_EXTENSIONS = "the pluginref backend (its SelectiveScan op is an onnxruntime-extensions Python op)"
_NO_GATE = "pluginref_no_z"  # initializer name of the empty z (shape [0])
_MIN_OPSET_CASTLIKE = 15


def _attribute_types() -> dict[str, Any]:
    ox = require("onnxruntime_extensions", _EXTENSIONS)
    dt = ox.PyCustomOpDef
    kinds = {"int": dt.dt_int64, "string": dt.dt_string}
    types = {a.name: kinds[a.type] for a in spec.ATTRIBUTES}
    types[THREADS_ATTRIBUTE] = dt.dt_int64
    return types


@functools.cache
def _register_reference_op() -> str:
    """Register the Python op once per process; returns the extensions' custom-op library path."""
    ox = require("onnxruntime_extensions", _EXTENSIONS)
    from locore.native import selective_scan_cpu

    float32 = ox.PyCustomOpDef.dt_float

    @ox.onnx_op(
        op_type=REFERENCE_OP_TYPE,
        inputs=[float32] * spec.MAX_INPUTS,
        outputs=[float32],
        attrs=_attribute_types(),
    )
    def _selective_scan(*arrays: np.ndarray, **attrs: Any) -> np.ndarray:
        named = dict(zip(spec.INPUT_NAMES, arrays, strict=True))
        z = named.pop("z")
        return selective_scan_cpu(
            **named,
            z=None if z.ndim == 1 else z,  # the [0] placeholder: no gate
            dt_softplus=bool(attrs["dt_softplus"]),
            reverse=bool(attrs["reverse"]),
            variant=str(attrs["variant"]),
            chunk_size=int(attrs["chunk_size"]),
            num_threads=int(attrs[THREADS_ATTRIBUTE]),
        )

    return str(ox.get_library_path())


def _default_opset(proto: Any) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def rewrite_scan_nodes(proto: Any, threads: int = 0, source: str = "the model") -> int:
    """Rewrite every ``locore::SelectiveScan`` node of ``proto`` (an onnx ModelProto, in place)
    into the reference op (see the module docstring); returns how many nodes were rewritten.

    ``threads``: the CPU library's thread count per node (0 = every core). Raises ValueError
    for a node that does not follow :mod:`locore.scan_spec` (input count, plugin version,
    attribute values).
    """
    onnx = require("onnx", _PURPOSE)
    helper, float32 = onnx.helper, onnx.TensorProto.FLOAT
    graph = proto.graph
    is_scan = [n.domain == spec.DOMAIN and n.op_type == spec.OP_TYPE for n in graph.node]
    scans = [n for n, hit in zip(graph.node, is_scan, strict=True) if hit]
    if not scans:
        return 0
    if _default_opset(proto) < _MIN_OPSET_CASTLIKE:
        raise ValueError(
            f"{source} imports ONNX opset {_default_opset(proto)}; the pluginref rewrite needs "
            f"CastLike (opset >= {_MIN_OPSET_CASTLIKE}); re-export the model (opset 17 or newer)"
        )
    nodes = []
    for index, node in enumerate(graph.node):
        if not is_scan[index]:
            nodes.append(node)
            continue
        label = node.name or f"#{index}"
        if not spec.MIN_INPUTS <= len(node.input) <= spec.MAX_INPUTS:
            raise ValueError(
                f"{source}: SelectiveScan node {label} has {len(node.input)} inputs; expected "
                f"{spec.MIN_INPUTS} ({', '.join(spec.INPUT_NAMES[: spec.MIN_INPUTS])}) or "
                f"{spec.MAX_INPUTS} (with {spec.INPUT_NAMES[-1]})"
            )
        given = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        values = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in given.items()}
        try:
            attrs = spec.node_attributes(**values)
        except ValueError as exc:
            raise ValueError(
                f"{source}: SelectiveScan node {label}: {exc}; this reference implements plugin "
                f"{spec.PLUGIN_NAME} version {spec.PLUGIN_VERSION!r}"
            ) from exc
        prefix = f"pluginref_{index}"
        inputs = list(node.input) + [_NO_GATE] * (spec.MAX_INPUTS - len(node.input))
        cast_names = []
        for name, tensor in zip(inputs, spec.INPUT_NAMES, strict=True):
            cast_names.append(f"{prefix}_{tensor}_f32")
            nodes.append(helper.make_node("Cast", [name], [cast_names[-1]], to=float32))
        y32 = f"{prefix}_y_f32"
        nodes.append(
            helper.make_node(
                REFERENCE_OP_TYPE,
                cast_names,
                [y32],
                name=node.name,
                domain=PYOP_DOMAIN,
                **attrs,
                **{THREADS_ATTRIBUTE: threads},
            )
        )
        nodes.append(helper.make_node("CastLike", [y32, node.input[0]], [node.output[0]]))
    gated = [len(n.input) == spec.MAX_INPUTS for n in scans]
    del graph.node[:]
    graph.node.extend(nodes)
    if not all(gated):
        graph.initializer.append(helper.make_tensor(_NO_GATE, float32, [0], []))
    if PYOP_DOMAIN not in {o.domain for o in proto.opset_import}:
        proto.opset_import.append(helper.make_opsetid(PYOP_DOMAIN, 1))
    return len(scans)


def pluginref_session(path: str | Path, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` (CPU) for the plugin-flavor ONNX file ``path``, its
    SelectiveScan nodes computed by the CPU library.

    ``threads``: ONNX Runtime's intra-op threads and the library's threads per scan
    (``None``: every core). Raises FileNotFoundError for a missing file and ValueError for a
    model without SelectiveScan nodes (open the portable flavor with the onnxruntime backend).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    threads = check_threads(threads)
    onnx = require("onnx", _PURPOSE)
    ort = require("onnxruntime")
    library = _register_reference_op()
    proto = onnx.load(str(path))
    count = rewrite_scan_nodes(proto, threads=threads or 0, source=str(path))
    if count == 0:
        raise ValueError(
            f"{path} has no {spec.DOMAIN}::{spec.OP_TYPE} node, so it is not a plugin-flavor "
            "model; open it with the onnxruntime backend instead"
        )
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, not our logs
    log.info("pluginref: %s with %d SelectiveScan node(s) on the CPU library", path, count)
    try:
        return ort.InferenceSession(
            proto.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise RuntimeError(f"ONNX Runtime could not load {path} for pluginref: {exc}") from exc

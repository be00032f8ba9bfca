"""INT8 variant of an exported re-ranker: explicit Q/DQ around the dense layers.

TensorRT's explicit quantization (TensorRT 10 and 11; the only INT8 path of TensorRT 11, which
removed implicit INT8 and the calibrators) reads the precision from QuantizeLinear /
DequantizeLinear nodes. The placement here follows its rules (developer guide, "Explicit
Quantization" and "Q/DQ Layer-Placement Recommendations"):

- symmetric quantization only: every zero point is 0, INT8 range [-128, 127], scale = amax / 127;
- weights per channel along the output-channel axis (axis 1 of a MatMul weight [K, N]), stored as
  INT8 initializers behind a DequantizeLinear; activations per tensor (a scalar scale);
- Q/DQ on the *inputs* of the quantizable layer (activation and weight of each dense MatMul),
  none on outputs, so TensorRT fuses DQ -> MatMul into an INT8 GEMM and ONNX Runtime into an
  integer MatMul; the scans, norms, softplus and exponentials keep their FP32 inputs (no Q/DQ
  inside the scan: a quantized state or decay would compound its error over the sequence);
- opset >= 13 (per-axis DequantizeLinear); scales have the float type of the tensor they
  quantize (FP32 here), so the graph stays strongly typed.

The activation ranges (amax per tensor) come from a calibration set run through ONNX Runtime:
``minmax`` (largest |value| seen), ``percentile`` (99.99th percentile of |value|) or
``entropy`` (TensorRT's KL-divergence threshold search over a 2048-bin histogram); the last two
keep the full range of an activation bounded by 1 (:data:`FULL_RANGE_LIMIT`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from locore.calibration.graph import FLOAT, DenseLayer, all_names, dense_layers, unique_name
from locore.errors import UsageError

log = logging.getLogger(__name__)

__all__ = ["METHODS", "activation_amax", "entropy_threshold", "insert_qdq"]

METHODS = ("minmax", "entropy", "percentile")
"""Calibration methods for the activation ranges."""
PERCENTILE = 99.99
FULL_RANGE_LIMIT = 1.0
"""entropy and percentile never clip an activation whose whole range is within [-1, 1]: such an
activation (the match embedding, an RBF in [0, 1]) is resolved to 1/127 by INT8 already, and its
rare large values are the matches themselves; clipping it (entropy: amax 1.0 -> 0.11) cost the
shipped model 5 mAP."""
HISTOGRAM_BINS = 2048
QUANT_LEVELS = 128  # |q| in 0..127 on each side
MIN_OPSET = 13


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UsageError(
            f"calibration method must be one of {list(METHODS)}, got {method!r} (minmax is the "
            "default; entropy and percentile clip outliers)"
        )
    return method


def entropy_threshold(hist: np.ndarray, bin_width: float, levels: int = QUANT_LEVELS) -> float:
    """TensorRT's entropy calibration: the clipping threshold of |x| (histogram ``hist`` of
    |x| with bins of ``bin_width`` from 0) that minimises KL(P || Q), P the clipped histogram
    (outliers folded into the last bin), Q its quantization to ``levels`` levels."""
    hist = hist.astype(np.float64)
    nbins = hist.size
    if nbins <= levels or hist.sum() == 0:
        return nbins * bin_width
    best_kl, best_i = np.inf, nbins
    step = max(1, (nbins - levels) // 240)
    for i in range(levels, nbins + 1, step):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        # Q: merge p's first i bins into `levels` groups, spread each group's mass evenly over
        # its non-empty bins.
        edges = np.linspace(0, i, levels + 1).astype(int)
        q = np.zeros(i)
        src = hist[:i]
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            if b <= a:
                continue
            nonzero = src[a:b] > 0
            count = int(nonzero.sum())
            if count:
                q[a:b][nonzero] = src[a:b].sum() / count
        mask = p > 0
        ps, qs = p[mask] / p.sum(), q[mask]
        if qs.sum() == 0 or (qs == 0).any():
            kl = np.inf if (qs == 0).any() else 0.0
        else:
            qs = qs / q.sum()
            kl = float(np.sum(ps * np.log(ps / qs)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return (best_i + 0.5) * bin_width


def activation_amax(
    run: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]],
    windows: Iterable[Mapping[str, np.ndarray]],
    names: list[str],
    method: str = "minmax",
) -> dict[str, float]:
    """amax (the clipping threshold of |x|) of each tensor ``names`` over the calibration
    ``windows``; ``run(feeds)`` returns those tensors' values in ``names`` order."""
    check_method(method)
    windows = list(windows)
    amax = {n: 0.0 for n in names}
    for feeds in windows:
        for name, value in zip(names, run(feeds), strict=True):
            if value.size:
                amax[name] = max(amax[name], float(np.abs(value).max()))
    if method == "minmax":
        return amax
    hists = {n: np.zeros(HISTOGRAM_BINS, np.int64) for n in names}
    for feeds in windows:
        for name, value in zip(names, run(feeds), strict=True):
            top = amax[name] or 1.0
            hists[name] += np.histogram(np.abs(value), bins=HISTOGRAM_BINS, range=(0, top))[0]
    out = {}
    for name in names:
        hist, top = hists[name], amax[name] or 1.0
        if top <= FULL_RANGE_LIMIT:
            out[name] = amax[name]
            continue
        width = top / HISTOGRAM_BINS
        if method == "percentile":
            cdf = np.cumsum(hist) / max(hist.sum(), 1)
            index = int(np.searchsorted(cdf, PERCENTILE / 100.0))
            out[name] = min(top, (index + 1) * width)
        else:
            out[name] = min(top, entropy_threshold(hist, width))
    return out


def insert_qdq(
    proto: Any, amax: Mapping[str, float], layers: list[DenseLayer] | None = None
) -> Any:
    """A copy of the FP32 ModelProto ``proto`` with Q/DQ on the inputs of ``layers`` (default:
    every dense layer): the activation per tensor with scale ``amax[name] / 127``, the weight
    as an INT8 initializer per output channel behind a DequantizeLinear (axis 1)."""
    import onnx
    from onnx import helper, numpy_helper

    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version < MIN_OPSET:
            raise ValueError(
                f"Q/DQ with per-channel weights needs ONNX opset >= {MIN_OPSET}, the model has "
                f"{entry.version}; re-export it (`locore export`, default opset 18)"
            )
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    layers = dense_layers(out) if layers is None else layers
    taken = all_names(out)
    inits = {i.name: i for i in graph.initializer}
    by_node = {layer.name: layer for layer in layers}
    activation_dq: dict[str, str] = {}
    new_inits: list[Any] = []
    nodes: list[Any] = []
    for node in graph.node:
        layer = by_node.get(node.name) if node.op_type in ("MatMul", "Gemm") else None
        if layer is None:
            nodes.append(node)
            continue
        # activation: per tensor, symmetric
        act = layer.activation
        if act not in activation_dq:
            top = float(amax.get(act, 0.0))
            scale = np.float32(top / 127.0 if top > 0 else 1.0)
            s_name = unique_name(taken, f"{act}_scale")
            z_name = unique_name(taken, f"{act}_zero_point")
            q_name = unique_name(taken, f"{act}_quantized")
            dq_name = unique_name(taken, f"{act}_dequantized")
            new_inits.append(numpy_helper.from_array(np.array(scale, np.float32), s_name))
            new_inits.append(numpy_helper.from_array(np.array(0, np.int8), z_name))
            nodes.append(
                helper.make_node(
                    "QuantizeLinear", [act, s_name, z_name], [q_name],
                    name=unique_name(taken, f"QuantizeLinear_{act}"),
                )
            )  # fmt: skip
            nodes.append(
                helper.make_node(
                    "DequantizeLinear", [q_name, s_name, z_name], [dq_name],
                    name=unique_name(taken, f"DequantizeLinear_{act}"),
                )
            )  # fmt: skip
            activation_dq[act] = dq_name
        node.input[0] = activation_dq[act]
        # weight: per output channel (axis 1 of [K, N]), INT8 initializer + DequantizeLinear
        weight = numpy_helper.to_array(inits[layer.weight]).astype(np.float32)
        w_amax = np.abs(weight).max(axis=0)
        w_scale = np.where(w_amax > 0, w_amax / 127.0, 1.0).astype(np.float32)
        w_q = np.clip(np.rint(weight / w_scale), -127, 127).astype(np.int8)
        wq_name = unique_name(taken, f"{layer.weight}_int8")
        ws_name = unique_name(taken, f"{layer.weight}_scale")
        wz_name = unique_name(taken, f"{layer.weight}_zero_point")
        wdq_name = unique_name(taken, f"{layer.weight}_dequantized")
        new_inits.append(numpy_helper.from_array(w_q, wq_name))
        new_inits.append(numpy_helper.from_array(w_scale, ws_name))
        new_inits.append(numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), wz_name))
        nodes.append(
            helper.make_node(
                "DequantizeLinear", [wq_name, ws_name, wz_name], [wdq_name], axis=1,
                name=unique_name(taken, f"DequantizeLinear_{layer.weight}"),
            )
        )  # fmt: skip
        node.input[1] = wdq_name
        nodes.append(node)
    used = {name for node in nodes for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    graph.ClearField("value_info")
    log.info("int8: Q/DQ on %d dense layers, %d activations", len(layers), len(activation_dq))
    return out


def augmented_runner(
    proto: Any, names: list[str], threads: int | None = None
) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
    """``run(feeds) -> values of names`` for ``proto`` with those tensors added as graph outputs,
    in ONNX Runtime on the CPU (plugin flavor: through the pluginref backend)."""
    import onnx

    from locore.calibration.graph import scan_nodes

    work = onnx.ModelProto()
    work.CopyFrom(proto)
    present = {o.name for o in work.graph.output}
    for name in names:
        if name not in present:
            work.graph.output.append(onnx.helper.make_tensor_value_info(name, FLOAT, None))
    if any(True for _ in scan_nodes(work)):
        from locore.runtime.backends.pluginref import pluginref_session

        tmp = Path(tempfile.mkdtemp(prefix="locore-calib-")) / "augmented.onnx"
        try:
            onnx.save(work, str(tmp))
            session = pluginref_session(tmp, threads=threads)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.parent.rmdir()
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            work.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    inputs = {i.name for i in session.get_inputs()}

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return session.run(names, {k: v for k, v in feeds.items() if k in inputs})

    return run

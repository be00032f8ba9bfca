"""``calibrate``: the FP16 or INT8 (Q/DQ) variant of an exported re-ranker, checked and written.

TensorRT 10.x and 11 build strongly typed networks whose precisions come from the ONNX file
(docs/design.md section 5), so a precision is made here, as a new ONNX file of either flavor:

- ``fp16``: :func:`locore.calibration.fp16.convert_fp16` (FP16 dense layers and scan I/O; FP32
  scan state, weights A/D/dt_bias, norms and reductions; explicit Casts);
- ``int8``: :func:`locore.calibration.int8.insert_qdq` with activation ranges measured on a
  calibration set (:mod:`locore.calibration.sets`) by ``minmax``, ``entropy`` or
  ``percentile``.

Every result passes ``onnx.checker`` and :func:`~locore.calibration.graph.strong_typing_problems`
before it is written (atomically); its metadata records the precision (``locore.precision``) and,
for INT8, the calibration method and set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locore.calibration.graph import dense_layers, strong_typing_problems, tensor_types
from locore.calibration.int8 import METHODS, activation_amax, augmented_runner, check_method
from locore.calibration.sets import CalibrationSet, demo_calibration_set
from locore.config import META_CALIBRATION, META_PRECISION, GraphIO, LocoreConfig
from locore.errors import UsageError

log = logging.getLogger(__name__)

__all__ = ["META_PRECISION", "PRECISIONS", "CalibrationResult", "calibrate", "make_precision"]

PRECISIONS = ("fp16", "int8")
"""What ``calibrate`` makes (the input is the FP32 export)."""


class PrecisionError(RuntimeError):
    """A precision variant broke a contract (strong typing, onnx.checker)."""


@dataclass
class CalibrationResult:
    path: Path
    precision: str
    method: str | None
    flavor: str
    amax: dict[str, float] = field(default_factory=dict)
    dense_layers: list[str] = field(default_factory=list)
    report: Path | None = None


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UsageError(
            f"precision must be one of {list(PRECISIONS)}, got {precision!r} (the FP32 model is "
            "what `locore export` writes)"
        )
    return precision


def _load(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise FileNotFoundError(
            f"ONNX model {path} does not exist; export one with `locore export`"
        )
    return onnx.load(str(path))


def _metadata(proto: Any) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def read_metadata(path: str | Path) -> tuple[LocoreConfig, GraphIO | None]:
    """(config, graph I/O) recorded in the ONNX file ``path``, read with onnx (so that a
    plugin-flavor file, which ONNX Runtime cannot open, is read too)."""
    import onnx

    from locore.runtime.metadata import parse_model_metadata

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ONNX model {path} does not exist; export one with `locore export`"
        )
    proto = onnx.load(str(path), load_external_data=False)
    return parse_model_metadata(_metadata(proto), str(path))


def _set_metadata(proto: Any, values: dict[str, str]) -> None:
    meta = _metadata(proto)
    meta.update(values)
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)


def make_precision(
    proto: Any,
    precision: str,
    calib: CalibrationSet | None = None,
    method: str = "minmax",
    threads: int | None = None,
    source: str = "the model",
) -> tuple[Any, dict[str, float]]:
    """(the ``precision`` variant of the FP32 ModelProto ``proto``, amax per activation)."""
    import onnx

    from locore.calibration.fp16 import convert_fp16
    from locore.calibration.int8 import insert_qdq
    from locore.runtime.metadata import parse_model_metadata

    check_precision(precision)
    check_method(method)
    meta = _metadata(proto)
    if meta.get(META_PRECISION, "fp32") != "fp32":
        raise UsageError(
            f"{source} is already {meta[META_PRECISION]}; calibrate the FP32 export instead"
        )
    amax: dict[str, float] = {}
    if precision == "fp16":
        out = convert_fp16(proto)
    else:
        if calib is None:
            raise UsageError("int8 needs a calibration set (calib=...)")
        _, io = parse_model_metadata(meta, source)
        if io is not None:
            calib.check_fits(io.inputs, source)
        layers = dense_layers(proto)
        if not layers:
            raise UsageError(f"{source} has no dense layer (MatMul with an initializer weight)")
        names = sorted({layer.activation for layer in layers})
        run = augmented_runner(proto, names, threads=threads)
        amax = activation_amax(run, calib.windows(), names, method)
        out = insert_qdq(proto, amax, layers)
        _set_metadata(
            out,
            {
                META_CALIBRATION: json.dumps(
                    {"method": method, "amax": amax, "set": calib.provenance}, sort_keys=True
                )
            },
        )
    _set_metadata(out, {META_PRECISION: precision})
    problems = strong_typing_problems(out, tensor_types(out))
    if problems:
        raise PrecisionError(
            f"the {precision} graph breaks strong typing ({len(problems)} problems): "
            + "; ".join(problems[:5])
        )
    _check_model(out)
    del onnx
    return out, amax


def _check_model(proto: Any) -> None:
    import onnx

    from locore.calibration.graph import scan_nodes

    if any(True for _ in scan_nodes(proto)):
        try:  # the exporter's schema, so that the checker knows the node (needs torch)
            from locore.export.scan_op import register_onnx_schema

            register_onnx_schema()
        except ImportError:  # pragma: no cover - checked without the custom op's schema
            pass
    onnx.checker.check_model(proto)


def calibrate(
    onnx_path: str | Path,
    output: str | Path,
    precision: str,
    *,
    calib: str | Path | CalibrationSet | None = None,
    method: str = "minmax",
    report: str | Path | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> CalibrationResult:
    """Write the ``precision`` (``fp16`` or ``int8``) variant of the FP32 ONNX file
    ``onnx_path`` to ``output`` (atomically).

    ``calib``: a calibration set (.npz or :class:`CalibrationSet`); for INT8 without one, a set
    is drawn from the demo's train split (built in ``cache_dir`` on first use). ``report``: a
    folder for the accuracy report (:func:`locore.calibration.report.precision_report`).
    """
    import onnx

    from locore.fileio import atomic_path
    from locore.runtime.metadata import parse_model_metadata

    check_precision(precision)
    check_method(method)
    onnx_path, output = Path(onnx_path), Path(output)
    if output.resolve() == onnx_path.resolve():
        from locore.errors import OutputError

        raise OutputError(f"--output {output} is the input model; write the variant elsewhere")
    proto = _load(onnx_path)
    meta = _metadata(proto)
    config, _ = parse_model_metadata(meta, str(onnx_path))
    calib_set: CalibrationSet | None = None
    if precision == "int8":
        if isinstance(calib, CalibrationSet):
            calib_set = calib
        elif calib is not None:
            calib_set = CalibrationSet.load(calib)
        else:
            log.info("no calibration set given: drawing one from the demo's train split")
            calib_set = demo_calibration_set(config, cache_dir=cache_dir, progress=progress)
    out, amax = make_precision(
        proto, precision, calib_set, method, threads=threads, source=str(onnx_path)
    )
    with atomic_path(output) as tmp:
        onnx.save_model(out, str(tmp))
    log.info("wrote %s (%s, %s flavor)", output, precision, meta.get("locore.flavor", "?"))
    result = CalibrationResult(
        output,
        precision,
        method if precision == "int8" else None,
        meta.get("locore.flavor", "?"),
        amax,
        [layer.name for layer in dense_layers(proto)],
    )
    if report is not None:
        from locore.calibration.report import precision_report

        result.report = precision_report(
            onnx_path, {precision: output}, report, cache_dir=cache_dir, threads=threads,
            progress=progress,
        )  # fmt: skip
    return result


__all__ += ["METHODS", "PrecisionError", "read_metadata"]

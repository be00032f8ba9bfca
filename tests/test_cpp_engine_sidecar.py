"""The C++ runtime's engine-sidecar checks (runtime/cpp, locore::check_engine) on sidecars that
Python writes (:func:`locore.runtime.engines.write_engine`), refusing what Python refuses.

The engine bytes are random (no TensorRT here); what is compared is the sidecar logic: the C++
reader parses Python's JSON, and each mismatch (engine bytes, ONNX file, plugin library,
TensorRT version, GPU, compute capability) is refused by both with the same clause. Built with
the CMake helper of tests/test_cpp_hdf5.py; skipped without cmake.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from locore.runtime import engines as E
from tests.cpp_build import ROOT, build_runtime_targets, built_binary

ONNX_SHA = hashlib.sha256(b"model").hexdigest()
PLUGIN_SHA = hashlib.sha256(b"plugin").hexdigest()
MACHINE = E.MachineFacts("10.3.0.26", "Orin", "8.7")


@pytest.fixture(scope="module")
def binary() -> Path:
    build = build_runtime_targets("locore_runtime_sidecar_tests")
    return built_binary(build, "locore_runtime_sidecar_tests")


def _key(flavor: str = "plugin") -> E.EngineKey:
    profile = E.ShapeProfile(
        min={"query_desc": (1, 6, 8), "gallery_desc": (1, 1, 6, 8)},
        opt={"query_desc": (1, 6, 8), "gallery_desc": (1, 17, 6, 8)},
        max={"query_desc": (1, 6, 8), "gallery_desc": (1, 17, 6, 8)},
    )
    plugin = {"sha256": PLUGIN_SHA, "versions": ["2", "1"], "namespace": "locore"}
    return E.EngineKey(
        onnx_sha256=ONNX_SHA,
        config={"num_desc": 6, "desc_dim": 8},
        precision="fp16",
        flavor=flavor,
        profiles=(profile,),
        flags=E.BuildFlags().key(),
        plugin=plugin if flavor == "plugin" else None,
    )


def _check(binary: Path, engine: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "--check", str(engine), *args], capture_output=True, text=True, check=False
    )


def _wanted(
    onnx: str = ONNX_SHA, plugin: str = PLUGIN_SHA, machine: E.MachineFacts = MACHINE
) -> list[str]:
    trt = machine.tensorrt_version
    return ["--onnx-sha256", onnx, "--plugin-sha256", plugin,
            "--machine", trt, machine.gpu_name, machine.compute_capability]  # fmt: skip


def test_cpp_reads_python_sidecar(binary: Path, tmp_path: Path) -> None:
    engine = tmp_path / "m.plan"
    metadata = {"locore.config": '{"num_desc": 6}', "other": "dropped"}
    E.write_engine(engine, os.urandom(257), _key(), MACHINE, metadata=metadata)
    result = _check(binary, engine, *_wanted())
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines()[1:])
    assert lines == {
        "flavor": "plugin",
        "precision": "fp16",
        "onnx_sha256": ONNX_SHA,
        "tensorrt": "10.3.0.26",
        "profiles": "1",
        "metadata": "1",  # write_engine keeps only locore.* keys
    }
    # the C++ API reports TensorRT as major.minor.patch: the build number is not compared
    assert (
        _check(binary, engine, *_wanted(machine=E.MachineFacts("10.3.0", "Orin", "8.7"))).returncode
        == 0
    )


@pytest.mark.parametrize(
    ("change", "clause"),
    [
        ({"onnx": hashlib.sha256(b"other").hexdigest()}, "ONNX sha256: engine has "),
        ({"plugin": hashlib.sha256(b"rebuilt").hexdigest()}, "plugin library sha256: engine has "),
        ({"machine": E.MachineFacts("11.1.0", "Orin", "8.7")}, "TensorRT version: engine has "),
        ({"machine": E.MachineFacts("10.3.0.26", "RTX 4090", "8.7")}, "GPU: engine has Orin"),
        ({"machine": E.MachineFacts("10.3.0.26", "Orin", "8.9")}, "compute capability: engine"),
    ],
)
def test_cpp_refuses_what_python_refuses(
    binary: Path, tmp_path: Path, change: dict, clause: str
) -> None:
    engine = tmp_path / "m.plan"
    E.write_engine(engine, os.urandom(64), _key(), MACHINE)
    result = _check(binary, engine, *_wanted(**change))
    assert result.returncode == 1 and result.stdout.startswith("refused"), result.stdout
    assert clause in result.stdout and "Rebuild it on this machine with `locore build`" in (
        result.stdout
    )
    # Python refuses the same engine for the same reason
    key = _key()
    if "onnx" in change:
        key = dataclasses.replace(key, onnx_sha256=change["onnx"])
    if "plugin" in change:
        key = dataclasses.replace(key, plugin={**(key.plugin or {}), "sha256": change["plugin"]})
    with pytest.raises(E.EngineMismatchError, match=re.escape(clause)):
        E.check_engine(engine, key, change.get("machine", MACHINE))


def test_cpp_refuses_damaged_and_foreign_files(binary: Path, tmp_path: Path) -> None:
    engine = tmp_path / "m.plan"
    E.write_engine(engine, b"engine bytes", _key("portable"), MACHINE)
    assert _check(binary, engine, *_wanted(plugin="")).returncode == 0  # portable: no plugin
    engine.write_bytes(b"engine bytez")
    result = _check(binary, engine)
    assert result.returncode == 1
    assert "engine file sha256 differs from its sidecar's" in result.stdout
    plugin_engine = tmp_path / "p.plan"
    E.write_engine(plugin_engine, b"x", _key("plugin"), MACHINE)
    result = _check(binary, plugin_engine)  # no plugin library given
    assert result.returncode == 1 and "needs the plugin library" in result.stdout
    E.sidecar_path(engine).write_text('{"format": 2}')
    result = _check(binary, engine)
    assert (
        result.returncode == 1 and "format 2" in result.stdout and "locore build" in result.stdout
    )
    E.sidecar_path(engine).unlink()
    result = _check(binary, engine)
    assert result.returncode == 1 and "has no sidecar" in result.stdout


def test_cpp_constants_match_the_python_sources() -> None:
    """The names the C++ scorer and reader hard-code are the ones Python defines once."""
    from locore import scan_spec
    from locore.runtime import ames

    include = ROOT / "runtime" / "cpp" / "include" / "locore"
    scorer = (include / "trt_scorer.hpp").read_text()
    reader = (include / "hdf5_features.hpp").read_text()

    def constant(text: str, name: str) -> str:
        match = re.search(rf"\b{name}(\[\])? = (.+?);", text)
        assert match, f"{name} not found"
        return match[2]

    assert constant(scorer, "kScanPluginName") == f'"{scan_spec.PLUGIN_NAME}"'
    versions = ", ".join(f'"{v}"' for v in scan_spec.PLUGIN_VERSIONS)
    assert constant(scorer, "kScanPluginVersions") == "{" + versions + "}"
    assert constant(scorer, "kScanPluginNamespace") == f'"{scan_spec.PLUGIN_NAMESPACE}"'
    assert constant(scorer, "kPluginLibraryEnv") == f'"{E.PLUGIN_ENV}"'
    assert constant(reader, "kFeaturesDataset") == f'"{ames.FEATURES_DATASET}"'

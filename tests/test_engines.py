"""Engines without TensorRT: shapes, profiles, flags, trtexec lines, sidecars, the cache, plugins.

Machine facts (TensorRT version, GPU) are the sidecar logic's input and are given here as plain
data; expected values are written out by hand (profiles, trtexec lines) or come from another
reader (the onnx package for the metadata, hashlib for digests).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the toy ONNX model is written with the onnx package")

from locore import scan_spec  # noqa: E402
from locore.config import ConfigError, graph_io  # noqa: E402
from locore.deps import MissingDependencyError, is_available  # noqa: E402
from locore.errors import UsageError  # noqa: E402
from locore.runtime import engines as E  # noqa: E402
from tests.onnx_toy import build_toy_reranker, toy_config  # noqa: E402

MACHINE = E.MachineFacts("10.3.0", "Orin", "8.7")


def toy_onnx(path: Path, **metadata: str) -> Path:
    """The toy re-ranker, with extra ``locore.*`` metadata entries (e.g. flavor, precision)."""
    build_toy_reranker(path)
    if metadata:
        model = onnx.load(str(path))
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = f"locore.{key}", value
        onnx.save(model, str(path))
    return path


# ---- shapes -------------------------------------------------------------------------------------
def test_parse_shapes_trtexec_syntax() -> None:
    assert E.parse_shapes("query_desc:1x48x128,gallery_mask:1x100x48") == {
        "query_desc": (1, 48, 128),
        "gallery_mask": (1, 100, 48),
    }
    assert E.parse_shapes("'in:0':3x5, b:7") == {"in:0": (3, 5), "b": (7,)}
    assert E.format_shapes({"in:0": (3, 5), "b": (7,)}) == "'in:0':3x5,b:7"


@pytest.mark.parametrize("text", ["", "q", "q:1x", "q:1xx2", "q:-1x2", "q:1,q:2", "q:1.5"])
def test_parse_shapes_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="--maxShapes"):
        E.parse_shapes(text, "--maxShapes")


def test_default_profile_from_metadata_graph() -> None:
    graph = graph_io(toy_config())  # Nd = 6, Dl = 8, 4 scales
    profile = E.default_profile(graph, window=37)
    assert profile.min == {
        "query_desc": (1, 6, 8),
        "query_mask": (1, 6),
        "gallery_desc": (1, 1, 6, 8),
        "gallery_mask": (1, 1, 6),
        "query_scale": (1, 6),
        "gallery_scale": (1, 1, 6),
    }
    assert profile.opt == profile.max
    assert profile.max["gallery_desc"] == (1, 37, 6, 8)
    assert profile.max["gallery_scale"] == (1, 37, 6)
    assert profile.max["query_desc"] == (1, 6, 8)
    assert E.default_profile(graph).max["gallery_mask"] == (1, 100, 6)
    assert E.ShapeProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_profile_overrides_and_refusals() -> None:
    graph = graph_io(toy_config(), with_scales=False)
    g = {"gallery_desc": (2, 50, 6, 8), "gallery_mask": (2, 50, 6)}
    q = {"query_desc": (2, 6, 8), "query_mask": (2, 6)}
    profile = E.resolve_profile(graph, opt_shapes={**g, **q}, max_shapes={**g, **q}, batch=1)
    assert profile.max["gallery_desc"] == (2, 50, 6, 8)
    assert profile.min["gallery_desc"] == (1, 1, 6, 8)
    cases = [
        ({"max_shapes": {"nope": (1,)}}, "not inputs"),
        ({"max_shapes": {"query_desc": (1, 6)}}, "has 3 dims"),
        ({"max_shapes": {"query_desc": (1, 7, 8)}}, "fixed at 6"),
        ({"max_shapes": {"gallery_desc": (1, 50, 6, 8)}}, "disagree on 'num_gallery'"),
        ({"min_shapes": {"query_desc": (0, 6, 8), "query_mask": (0, 6)}}, "must be >= 1"),
        ({"min_shapes": {"gallery_desc": (1, 200, 6, 8), "gallery_mask": (1, 200, 6)}}, "min <="),
    ]
    for kwargs, words in cases:
        with pytest.raises(UsageError, match=words):
            E.resolve_profile(graph, **kwargs)  # type: ignore[arg-type]


# ---- flags --------------------------------------------------------------------------------------
def test_mem_pool_size_units() -> None:
    assert E.parse_mem_pool_size("workspace:1024") == {"workspace": 1024 << 20}
    assert E.parse_mem_pool_size("workspace:2G,tacticSharedMem:64K") == {
        "workspace": 2 << 30,
        "tacticSharedMem": 64 << 10,
    }
    assert E.parse_mem_pool_size("workspace:0.5") == {"workspace": 512 << 10}
    for bad in ("workspace", "gpu:1", "workspace:1T", "workspace:-1"):
        with pytest.raises(UsageError, match="--memPoolSize"):
            E.parse_mem_pool_size(bad)


def test_build_flags_checks() -> None:
    E.BuildFlags().check(10)
    E.BuildFlags().check(11)
    E.BuildFlags(fp16=True, strongly_typed=False).check(10)
    with pytest.raises(UsageError, match="weakly typed"):
        E.BuildFlags(fp16=True).check(10)
    with pytest.raises(UsageError, match="TensorRT 11 removed") as info:
        E.BuildFlags(int8=True, strongly_typed=False).check(11)
    assert "locore calibrate" in str(info.value)
    with pytest.raises(UsageError, match="0 to 5"):
        E.BuildFlags(builder_optimization_level=6).check()
    with pytest.raises(UsageError, match="hardwareCompatibilityLevel"):
        E.BuildFlags(hardware_compatibility_level="turing+").check()
    key = E.BuildFlags(verbose=True, timing_cache=Path("t.cache")).key()
    assert key == E.BuildFlags().key()  # verbose and the timing cache do not change the engine


# ---- the trtexec command line (golden strings) --------------------------------------------------
def test_trtexec_command_default() -> None:
    profile = E.default_profile(graph_io(toy_config(), with_scales=False), window=48)
    cmd = E.trtexec_command("m.onnx", "m.plan", profile, E.BuildFlags())
    assert E.format_command(cmd) == (
        "trtexec --onnx=m.onnx --saveEngine=m.plan "
        "--minShapes=query_desc:1x6x8,query_mask:1x6,gallery_desc:1x1x6x8,gallery_mask:1x1x6 "
        "--optShapes=query_desc:1x6x8,query_mask:1x6,gallery_desc:1x48x6x8,gallery_mask:1x48x6 "
        "--maxShapes=query_desc:1x6x8,query_mask:1x6,gallery_desc:1x48x6x8,gallery_mask:1x48x6 "
        "--stronglyTyped --skipInference"
    )


def test_trtexec_command_every_flag() -> None:
    graph = graph_io(toy_config(), with_scales=False)
    profile = E.default_profile(graph, window=2)
    flags = E.BuildFlags(
        mem_pool_size=E.parse_mem_pool_size("workspace:1024,tacticSharedMem:64K"),
        builder_optimization_level=5,
        hardware_compatibility_level="ampere+",
        version_compatible=True,
        strongly_typed=False,
        fp16=True,
        timing_cache=Path("cache dir/t.cache"),
        verbose=True,
    )
    line = E.format_command(
        E.trtexec_command(
            "m.onnx", "m.plan", profile, flags, ["/p/liblocore_trt_plugins.so"],
            static_plugins=["/s.so"],
        )
    )  # fmt: skip
    assert line.endswith(
        "--fp16 --memPoolSize=tacticSharedMem:64K,workspace:1G --builderOptimizationLevel=5 "
        "--hardwareCompatibilityLevel=ampere+ --versionCompatible "
        "'--timingCacheFile=cache dir/t.cache' --dynamicPlugins=/p/liblocore_trt_plugins.so "
        "--setPluginsToSerialize=/p/liblocore_trt_plugins.so --staticPlugins=/s.so --verbose "
        "--skipInference"
    )
    assert "--stronglyTyped" not in line


# ---- ONNX metadata, keys ------------------------------------------------------------------------
def test_read_onnx_metadata_matches_onnx(tmp_path: Path) -> None:
    path = toy_onnx(tmp_path / "m.onnx", flavor="plugin", precision="int8")
    expected = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert E.read_onnx_metadata(path) == expected
    assert expected["locore.flavor"] == "plugin"
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 33)
    with pytest.raises(ConfigError, match="not an ONNX model"):
        E.read_onnx_metadata(tmp_path / "junk.onnx")


def test_engine_key_reads_precision_flavor_and_plugin(tmp_path: Path) -> None:
    portable = toy_onnx(tmp_path / "p.onnx", precision="fp16")
    plugin_onnx = toy_onnx(tmp_path / "q.onnx", flavor="plugin")
    lib = tmp_path / "liblocore_trt_plugins.so"
    lib.write_bytes(b"plugin v1")
    plugin = E.PluginLibrary.at(lib)
    profile = E.default_profile(graph_io(toy_config()))
    key = E.engine_key(portable, [profile], E.BuildFlags(), plugin)
    assert (key.precision, key.flavor, key.plugin) == ("fp16", "portable", None)
    assert key.onnx_sha256 == hashlib.sha256(portable.read_bytes()).hexdigest()
    assert key.config["desc_dim"] == 8
    key = E.engine_key(plugin_onnx, [profile], E.BuildFlags(), plugin)
    assert key.plugin == {
        "sha256": hashlib.sha256(b"plugin v1").hexdigest(),
        "versions": list(scan_spec.PLUGIN_VERSIONS),
        "namespace": scan_spec.PLUGIN_NAMESPACE,
    }
    with pytest.raises(FileNotFoundError, match="plugin flavor.*build-plugins"):
        E.engine_key(plugin_onnx, [profile], E.BuildFlags(), None)
    assert E.EngineKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key


# ---- sidecars and refusal on each kind of mismatch ----------------------------------------------
@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path, E.EngineKey, Path]:
    onnx_path = toy_onnx(tmp_path / "m.onnx", flavor="plugin")
    lib = tmp_path / "liblocore_trt_plugins.so"
    lib.write_bytes(os.urandom(64))
    profile = E.default_profile(graph_io(toy_config()), window=17)
    key = E.engine_key(onnx_path, [profile], E.BuildFlags(), E.PluginLibrary.at(lib))
    engine = tmp_path / "out" / "m.plan"
    E.write_engine(engine, os.urandom(101), key, MACHINE, onnx=onnx_path,
                   metadata=E.read_onnx_metadata(onnx_path))  # fmt: skip
    return onnx_path, engine, key, lib


def test_engine_and_sidecar_written_together(built) -> None:
    onnx_path, engine, key, _ = built
    sidecar = E.check_engine(engine, key, MACHINE)
    data = json.loads(E.sidecar_path(engine).read_text())
    assert data["engine_sha256"] == hashlib.sha256(engine.read_bytes()).hexdigest()
    assert data["machine"] == {
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
    }
    assert data["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert data["precision"] == "fp32" and data["flavor"] == "plugin"
    assert data["profiles"][0]["max"]["gallery_desc"] == [1, 17, 6, 8]
    assert "locore.config" in sidecar.metadata
    assert sorted(p.name for p in engine.parent.iterdir()) == ["m.plan", "m.plan.json"]


def _variants(key: E.EngineKey, tmp_path: Path) -> list[tuple[str, E.EngineKey, E.MachineFacts]]:
    import dataclasses

    other = toy_onnx(tmp_path / "other.onnx", flavor="plugin")
    plugin = dict(key.plugin or {})
    profile = E.default_profile(graph_io(toy_config()), window=18)
    rep = dataclasses.replace
    return [
        ("ONNX sha256", rep(key, onnx_sha256=E.sha256_file(other) + "0"), MACHINE),
        ("model config", rep(key, config={**key.config, "desc_dim": 9}), MACHINE),
        ("precision", rep(key, precision="int8"), MACHINE),
        ("flavor", rep(key, flavor="portable"), MACHINE),
        ("optimization profiles", rep(key, profiles=(profile,)), MACHINE),
        ("build flag builder_optimization_level",
         rep(key, flags=E.BuildFlags(builder_optimization_level=5).key()), MACHINE),
        ("plugin library sha256", rep(key, plugin={**plugin, "sha256": "0" * 64}), MACHINE),
        ("plugin library versions", rep(key, plugin={**plugin, "versions": ["3"]}), MACHINE),
        ("plugin library namespace", rep(key, plugin={**plugin, "namespace": "x"}), MACHINE),
        ("TensorRT version", key, rep(MACHINE, tensorrt_version="11.1.0")),
        ("GPU", key, rep(MACHINE, gpu_name="RTX 4090")),
        ("compute capability", key, rep(MACHINE, compute_capability="8.9")),
    ]  # fmt: skip


def test_each_kind_of_mismatch_is_refused_by_name(built, tmp_path: Path) -> None:
    _, engine, key, _ = built
    for what, wanted, machine in _variants(key, tmp_path):
        with pytest.raises(E.EngineMismatchError, match=what) as info:
            E.check_engine(engine, wanted, machine)
        assert "locore build" in str(info.value)
        assert E.engine_mismatches(E.read_sidecar(engine), wanted, machine)[0].startswith(what)


def test_damaged_or_missing_sidecar_and_engine(built) -> None:
    _, engine, key, _ = built
    data = bytearray(engine.read_bytes())
    data[7] ^= 1
    engine.write_bytes(bytes(data))
    with pytest.raises(E.EngineMismatchError, match="engine file sha256"):
        E.check_engine(engine, key, MACHINE)
    side = E.sidecar_path(engine)
    side.write_text(json.dumps({**json.loads(side.read_text()), "format": 99}))
    with pytest.raises(ConfigError, match="format 99"):
        E.check_engine(engine, key, MACHINE)
    side.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        E.check_engine(engine, key, MACHINE)
    side.unlink()
    with pytest.raises(FileNotFoundError, match="no sidecar"):
        E.check_engine(engine, key, MACHINE)


# ---- the cache ----------------------------------------------------------------------------------
def test_cache_builds_once_and_rebuilds_on_mismatch(built, tmp_path: Path) -> None:
    onnx_path, _, key, _ = built
    cache = E.EngineCache(tmp_path / "cache")
    calls: list[int] = []

    def build() -> bytes:
        calls.append(1)
        return np.random.default_rng(len(calls)).bytes(50)

    first, made = cache.get(key, MACHINE, build, stem="m", onnx=onnx_path)
    assert made and len(calls) == 1
    again, made = cache.get(key, MACHINE, build, stem="m")
    assert again == first and not made and len(calls) == 1
    jetson = E.MachineFacts("10.3.0", "Orin", "8.7")
    desktop = E.MachineFacts("11.1.0", "RTX 4090", "8.9")
    assert cache.path(key, jetson, "m") == first
    other, made = cache.get(key, desktop, build, stem="m")  # another machine: its own entry
    assert other != first and made and len(calls) == 2
    first.write_bytes(b"damaged")  # a damaged entry is rebuilt, not used
    rebuilt, made = cache.get(key, MACHINE, build, stem="m")
    assert rebuilt == first and made and len(calls) == 3
    E.check_engine(rebuilt, key, MACHINE)
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name]


def test_default_cache_dir(tmp_path: Path) -> None:
    assert E.default_cache_dir({E.CACHE_ENV: str(tmp_path)}) == tmp_path
    assert E.default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/locore-edge/engines")


# ---- plugin discovery ---------------------------------------------------------------------------
def test_find_plugin_library_order(tmp_path: Path) -> None:
    name = E.plugin_library_filename()
    assert name.startswith("liblocore_trt_plugins")
    explicit, env, found = tmp_path / "a.so", tmp_path / "b.so", tmp_path / "build" / name
    for p in (explicit, env, found):
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    dirs = [tmp_path / "empty", found.parent]
    assert E.find_plugin_library([explicit], {E.PLUGIN_ENV: str(env)}, dirs) == explicit
    assert E.find_plugin_library([], {E.PLUGIN_ENV: str(env)}, dirs) == env
    assert E.find_plugin_library([], {}, dirs) == found
    assert E.find_plugin_library([], {}, [tmp_path / "empty"]) is None
    with pytest.raises(FileNotFoundError, match="--dynamicPlugins"):
        E.find_plugin_library([tmp_path / "missing.so"], {}, dirs)
    with pytest.raises(FileNotFoundError, match=E.PLUGIN_ENV):
        E.find_plugin_library([], {E.PLUGIN_ENV: str(tmp_path / "missing.so")}, dirs)


# ---- without TensorRT ---------------------------------------------------------------------------
@pytest.mark.skipif(is_available("tensorrt"), reason="TensorRT is installed here")
def test_probe_machine_without_tensorrt() -> None:
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        E.probe_machine()


def test_tensorrt_backend_imports_without_tensorrt(tmp_path: Path) -> None:
    from locore.runtime.backends import tensorrt as T

    assert T.TrtRunner.kind == "tensorrt"
    with pytest.raises(UsageError, match="cuda must be one of"):
        T.cuda_api("opencl")
    if not is_available("tensorrt"):
        path = toy_onnx(tmp_path / "m.onnx")
        with pytest.raises(MissingDependencyError, match="tensorrt"):
            T.load_tensorrt_runner(path)
    with pytest.raises(UsageError, match="providers"):
        T.load_tensorrt_runner(tmp_path / "m.onnx", providers=["cpu"])


# ---- the build's call sequence, against a recording stand-in for TensorRT's Python API ----------
class _Recorder:
    """Records TensorRT API calls in order (names as in NVIDIA's Python API); builds nothing.

    Only the order and arguments of :mod:`locore.export.engine`'s calls are checked with it (the
    plugin registered before the parser runs, the flags, the profile); real builds are the
    ``trt``-marked tests of test_trt_backend.py.
    """

    def __init__(self, version: str) -> None:
        import enum
        import types

        self.calls: list[tuple[str, object]] = []
        self.__version__ = version
        rec = self

        class Severity(enum.IntEnum):
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = list(Severity)

            def __init__(self) -> None:
                pass

        class Obj:
            def __init__(self, name: str) -> None:
                self._name = name

            def __getattr__(self, attr: str):
                def call(*args, **kwargs):
                    rec.calls.append((f"{self._name}.{attr}", args))
                    if attr == "parse_from_file":
                        return True
                    if attr == "build_serialized_network":
                        return b"ENGINE"
                    if attr == "create_network":
                        return Obj("network")
                    if attr in ("create_builder_config",):
                        return Obj("config")
                    if attr == "create_optimization_profile":
                        return Obj("profile")
                    return None

                return call

            def __setattr__(self, attr: str, value: object) -> None:
                if attr.startswith("_"):
                    object.__setattr__(self, attr, value)
                else:
                    rec.calls.append((f"{self._name}.{attr}=", value))

        self.ILogger = ILogger
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", VERSION_COMPATIBLE="VC")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        self.HardwareCompatibilityLevel = types.SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS")
        self.get_plugin_registry = lambda: Obj("registry")
        self.Builder = lambda logger: Obj("builder")

        def parser(network: object, logger: object) -> Obj:
            rec.calls.append(("OnnxParser", ()))
            return Obj("parser")

        self.OnnxParser = parser


def test_build_sequence_registers_plugin_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    trt = _Recorder("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    pytest.importorskip("torch", reason="locore.export imports torch (see requests-H7.md)")
    from locore.export.engine import build_serialized_engine

    graph = graph_io(toy_config(), with_scales=False)
    profile = E.default_profile(graph, window=9)
    flags = E.BuildFlags(mem_pool_size={"workspace": 1 << 30}, version_compatible=True)
    data = build_serialized_engine("m.onnx", [profile], flags, "/p/lib.so")
    assert data == b"ENGINE"
    names = [name for name, _ in trt.calls]
    assert names.index("registry.load_library") < names.index("OnnxParser")
    assert ("builder.create_network", (1 << 5,)) in trt.calls  # STRONGLY_TYPED
    assert ("config.plugins_to_serialize=", ["/p/lib.so"]) in trt.calls
    assert ("config.set_flag", ("VC",)) in trt.calls
    assert ("config.set_memory_pool_limit", ("WORKSPACE", 1 << 30)) in trt.calls
    shapes = [args for name, args in trt.calls if name == "profile.set_shape"]
    assert ("gallery_desc", (1, 1, 6, 8), (1, 9, 6, 8), (1, 9, 6, 8)) in shapes
    assert len(shapes) == len(graph.inputs)
    monkeypatch.setitem(sys.modules, "tensorrt", _Recorder("11.1.0"))
    with pytest.raises(UsageError, match="TensorRT 11 removed"):
        build_serialized_engine("m.onnx", [profile], E.BuildFlags(fp16=True, strongly_typed=False))

"""The SelectiveScan TensorRT plugin (liblocore_trt_plugins.so) against the torch reference.

Needs the ``tensorrt`` Python package, a CUDA device visible to torch, and a built plugin
library: ``$LOCORE_TRT_PLUGIN_LIB``, else ``<repo>/build/plugins/liblocore_trt_plugins.so``
(``locore build-plugins --tensorrt-root DIR`` or
``cmake -S plugins -B build/plugins -DTENSORRT_ROOT=DIR && cmake --build build/plugins``).
Each missing piece skips the tests with the reason.

The network is built the way the ONNX parser builds it for a ``locore::SelectiveScan`` node:
the creator is looked up by name/version/namespace, the plugin is created from plugin fields in
the build phase, added with ``add_plugin_v3``; the engine is serialized and deserialized (which
recreates the plugin from its serialized fields) before it runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

trt = pytest.importorskip(
    "tensorrt", reason="the tensorrt Python package is not installed (pip install tensorrt)"
)
import torch  # noqa: E402  (after the skip: the module needs TensorRT first)

from locore import scan_spec  # noqa: E402
from locore.model import selective_scan_ref  # noqa: E402

pytestmark = [pytest.mark.trt, pytest.mark.gpu]

PLUGIN_ENV = "LOCORE_TRT_PLUGIN_LIB"
PLUGIN_NAME = scan_spec.PLUGIN_NAME
PLUGIN_VERSION = scan_spec.PLUGIN_VERSION
PLUGIN_NAMESPACE = scan_spec.PLUGIN_NAMESPACE

# Per-dtype tolerances (mamba-ssm's test habits), relative to the output scale.
TOL = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3)}
TRT_DTYPE = {torch.float32: trt.float32, torch.float16: trt.float16}


def _plugin_library() -> Path | None:
    env = os.environ.get(PLUGIN_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    candidate = repo / "build" / "plugins" / "liblocore_trt_plugins.so"
    return candidate if candidate.exists() else None


@pytest.fixture(scope="module")
def creator():
    """The registered SelectiveScan creator, loading the plugin library once."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch (the plugin runs on the GPU)")
    library = _plugin_library()
    if library is None or not library.exists():
        pytest.skip(
            f"liblocore_trt_plugins.so not built (set ${PLUGIN_ENV} or build it with "
            "`locore build-plugins --tensorrt-root DIR`)"
        )
    registry = trt.get_plugin_registry()
    found = registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)
    if found is None:
        handle = registry.load_library(str(library))
        assert handle is not None, f"IPluginRegistry::loadLibrary failed for {library}"
        found = registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)
    assert found is not None, f"{library} did not register {PLUGIN_NAME} version {PLUGIN_VERSION}"
    return found


@pytest.fixture(scope="module")
def creator_v1(creator):
    """Version 1 (every input in x's dtype), kept registered for engines built with it."""
    found = trt.get_plugin_registry().get_creator(PLUGIN_NAME, "1", PLUGIN_NAMESPACE)
    assert found is not None, f"the library does not keep {PLUGIN_NAME} version 1 registered"
    return found


def _fields(variant: str, dt_softplus: int, reverse: int, chunk_size: int):
    """The plugin fields, typed as TensorRT's ONNX parser types the node's attributes
    (STRING -> kCHAR, INT -> kINT32)."""
    values = scan_spec.node_attributes(
        variant=variant, dt_softplus=dt_softplus, reverse=reverse, chunk_size=chunk_size
    )
    fields = []
    for attr in scan_spec.ATTRIBUTES:
        if not attr.plugin_field:
            continue
        value = values[attr.name]
        if attr.type == "string":
            fields.append(trt.PluginField(attr.name, str(value).encode(), trt.PluginFieldType.CHAR))
        else:
            data = np.array([value], np.int32)
            fields.append(trt.PluginField(attr.name, data, trt.PluginFieldType.INT32))
    return trt.PluginFieldCollection(fields)


def _make_inputs(
    variant, batch, length, heads, pdim, groups, nstate, dtype, gate, seed, weights=torch.float32
):
    """Inputs of one call: A, D and dt_bias in ``weights`` (FP32 for plugin version 2, x's
    dtype for version 1), the others in ``dtype``."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    x_shape = (batch, length, heads, pdim) if variant == "mamba2" else (batch, length, heads)
    a_shape = (heads,) if variant == "mamba2" else (heads, nstate)
    tensors = {
        "x": rnd(*x_shape),
        "dt": (torch.rand(batch, length, heads, generator=g) * 0.3).to(dtype),
        "A": (-(torch.rand(*a_shape, generator=g) * 2 + 0.1)).to(weights),
        "B": rnd(batch, length, groups, nstate, scale=0.5),
        "C": rnd(batch, length, groups, nstate, scale=0.5),
        "D": rnd(heads).to(weights),
        "dt_bias": rnd(heads, scale=0.1).to(weights),
    }
    if gate:
        tensors["z"] = rnd(*x_shape)
    return tensors


def _build_engine(creator, example, variant, dt_softplus, reverse, chunk_size, max_length):
    """Serialized engine with one SelectiveScan layer; L (axis 1) dynamic up to max_length."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    inputs = []
    for spec in scan_spec.INPUTS:
        if spec.name not in example:
            continue
        name, tensor = spec.name, example[spec.name]
        shape = list(tensor.shape)
        if spec.shape(variant)[:2] == ("B", "L"):  # token-major tensors: L is axis 1
            shape[1] = -1
            lo, hi = list(tensor.shape), list(tensor.shape)
            lo[1], hi[1] = 1, max_length
            profile.set_shape(name, lo, list(tensor.shape), hi)
        inputs.append(network.add_input(name, TRT_DTYPE[tensor.dtype], shape))
    config.add_optimization_profile(profile)
    fields = _fields(variant, dt_softplus, reverse, chunk_size)
    plugin = creator.create_plugin("selective_scan", fields, trt.TensorRTPhase.BUILD)
    assert plugin is not None, "createPlugin returned nullptr (see the TensorRT log)"
    layer = network.add_plugin_v3(inputs, [], plugin)
    assert layer is not None
    y = layer.get_output(0)
    y.name = "y"
    network.mark_output(y)
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None, "engine build failed (see the TensorRT log)"
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(serialized)
    assert engine is not None
    return runtime, engine


def _run(engine, tensors) -> torch.Tensor:
    context = engine.create_execution_context()
    device = {name: t.contiguous().cuda() for name, t in tensors.items()}
    y = torch.empty_like(device["x"])
    for name, t in device.items():
        assert context.set_input_shape(name, tuple(t.shape))
        context.set_tensor_address(name, t.data_ptr())
    context.set_tensor_address("y", y.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return y.cpu()


def _reference(tensors, variant, dt_softplus, reverse):
    return selective_scan_ref(
        tensors["x"],
        tensors["dt"],
        tensors["A"],
        tensors["B"],
        tensors["C"],
        D=tensors["D"],
        z=tensors.get("z"),
        dt_bias=tensors["dt_bias"],
        dt_softplus=bool(dt_softplus),
        reverse=bool(reverse),
        variant=variant,
    )


def test_creator_is_registered(creator):
    assert creator.name == PLUGIN_NAME
    assert creator.plugin_version == PLUGIN_VERSION
    assert creator.plugin_namespace == PLUGIN_NAMESPACE
    names = [field.name for field in creator.field_names]
    assert names == [a.name for a in scan_spec.ATTRIBUTES if a.plugin_field]


@pytest.mark.parametrize(
    ("variant", "dtype", "gate", "dt_softplus", "reverse"),
    [
        ("mamba2", torch.float32, True, 1, 0),
        ("mamba2", torch.float32, False, 0, 1),
        ("mamba2", torch.float16, True, 1, 1),
        ("mamba1", torch.float32, True, 1, 0),
        ("mamba1", torch.float16, False, 0, 0),
    ],
)
def test_plugin_matches_reference(creator, variant, dtype, gate, dt_softplus, reverse):
    sizes = dict(batch=2, heads=4, pdim=8, groups=2, nstate=16)
    chunk_size = 16
    example = _make_inputs(variant, length=37, dtype=dtype, gate=gate, seed=0, **sizes)
    runtime, engine = _build_engine(
        creator, example, variant, dt_softplus, reverse, chunk_size, max_length=80
    )
    rtol, atol = TOL[dtype]
    # One engine, several lengths: odd, one chunk, several chunks, a single token.
    for seed, length in enumerate((37, 16, 80, 1)):
        tensors = _make_inputs(variant, length=length, dtype=dtype, gate=gate, seed=seed, **sizes)
        got = _run(engine, tensors)
        want = _reference(tensors, variant, dt_softplus, reverse)
        assert got.dtype == dtype and got.shape == want.shape
        scale = max(want.float().abs().max().item(), 1.0)
        torch.testing.assert_close(
            got.float(), want.float(), rtol=rtol, atol=atol * scale, msg=f"L={length}"
        )
    del runtime


def test_version_1_takes_every_input_in_x_dtype(creator_v1):
    """An FP16 network built with version 1 (FP16 A, D, dt_bias) still builds and runs."""
    sizes = dict(batch=2, heads=4, pdim=8, groups=2, nstate=16)
    half = torch.float16
    example = _make_inputs(
        "mamba2", length=37, dtype=half, gate=True, seed=5, weights=half, **sizes
    )
    runtime, engine = _build_engine(creator_v1, example, "mamba2", 1, 0, 16, max_length=40)
    got = _run(engine, example)
    want = _reference(example, "mamba2", 1, 0)
    assert got.dtype == half
    scale = max(want.float().abs().max().item(), 1.0)
    torch.testing.assert_close(got.float(), want.float(), rtol=3e-3, atol=5e-3 * scale)
    del runtime


def test_padding_tokens_leave_state_alone(creator):
    """Trailing tokens with dt' = 0 (dt = 0, dt_bias = 0, no softplus) do not touch the state:
    a reverse scan over 16 tokens + 8 padding tokens gives the 16-token scan's outputs."""
    sizes = dict(batch=1, heads=4, pdim=8, groups=1, nstate=16)
    padded = _make_inputs("mamba2", length=24, dtype=torch.float32, gate=False, seed=3, **sizes)
    padded["dt_bias"] = torch.zeros_like(padded["dt_bias"])
    padded["dt"][:, 16:] = 0
    runtime, engine = _build_engine(creator, padded, "mamba2", 0, 1, 16, max_length=24)
    short = {k: (v[:, :16] if v.dim() > 1 else v) for k, v in padded.items()}
    got = _run(engine, padded)[:, :16]
    want = _run(engine, short)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(want, _reference(short, "mamba2", 0, 1), rtol=6e-4, atol=2e-3)
    del runtime

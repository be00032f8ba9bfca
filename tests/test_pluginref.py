"""pluginref: the plugin-flavor ONNX in ONNX Runtime, SelectiveScan through the CPU library.

The shipped model (locore/assets/demo-tiny) is exported in both flavors; the plugin flavor runs
through :func:`pluginref_session`, the portable flavor through plain onnxruntime, on the same
random packed windows, and the plugin flavor is also checked against the torch model.

Tolerance: the largest score difference relative to the largest |score| must be <= 1e-5
(TOLERANCE). Both sides compute in float32 (state included); they differ only in the order of
the scan's sums (chunked MatMuls vs the library's sequential recurrence): measured up to
2.5e-7 (1.2e-6 absolute) on these windows.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from locore import scan_spec
from locore.checkpoint_format import shipped_model_dir
from locore.export import example_inputs
from locore.model import load_checkpoint

pytest.importorskip(
    "onnxruntime_extensions", reason="pluginref needs onnxruntime-extensions (pip install it)"
)
from locore.runtime.backends.pluginref import (  # noqa: E402  (after the skip)
    REFERENCE_OP_TYPE,
    pluginref_session,
    rewrite_scan_nodes,
)

pytestmark = pytest.mark.slow  # exports the shipped model in both flavors (~30 s)

SHIPPED = shipped_model_dir()
TOLERANCE = 1e-5
CHUNK = 64


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


@pytest.fixture(scope="module")
def exported(shipped_onnx):
    """(plugin, portable) ONNX of the shipped model (path, config, io), shared with the other
    tests' exports."""
    from types import SimpleNamespace

    from locore.checkpoint_format import read_checkpoint_config
    from locore.config import graph_io

    config, _ = read_checkpoint_config(SHIPPED)
    return tuple(
        SimpleNamespace(path=shipped_onnx(flavor), config=config, io=graph_io(config))
        for flavor in ("plugin", "portable")
    )


def _packed_window(io, batch: int, ngal: int, num_scales: int, seed: int) -> dict:
    """Random packed inputs in numpy, one per graph input: unit descriptors, masks with padding
    at the end of each image (as the packer writes them), scale ids."""
    rng = np.random.default_rng(seed)
    sizes = {"batch": batch, "num_gallery": ngal}
    feeds = {}
    for spec in io.inputs:
        shape = tuple(sizes[s] if isinstance(s, str) else s for s in spec.shape)
        if spec.dtype == "float":
            v = rng.standard_normal(shape).astype(np.float32)
            feeds[spec.name] = v / np.linalg.norm(v, axis=-1, keepdims=True)
        elif spec.dtype == "bool":
            valid = rng.integers(1, shape[-1] + 1, size=shape[:-1])
            feeds[spec.name] = np.arange(shape[-1]) < valid[..., None]
        else:
            feeds[spec.name] = rng.integers(0, num_scales, size=shape, dtype=np.int64)
    return feeds


def test_rewrite_follows_the_spec(exported):
    plugin, _ = exported
    proto = onnx.load(str(plugin.path))
    n_scans = sum(n.op_type == scan_spec.OP_TYPE for n in proto.graph.node)
    assert rewrite_scan_nodes(proto, threads=2) == n_scans == 2 * plugin.config.n_layers
    refs = [n for n in proto.graph.node if n.op_type == REFERENCE_OP_TYPE]
    assert len(refs) == n_scans and not any(n.domain == scan_spec.DOMAIN for n in proto.graph.node)
    for node in refs:
        assert len(node.input) == scan_spec.MAX_INPUTS  # the empty z fills the 8th input
        names = {a.name for a in node.attribute}
        assert {a.name for a in scan_spec.ATTRIBUTES} <= names


@pytest.mark.parametrize(("batch", "ngal"), [(1, 1), (2, 3), (1, 12)])
def test_plugin_flavor_matches_portable_flavor(exported, batch, ngal):
    """(G + 1) * 50 tokens: 100, 200 and 650, never a multiple of the 64-token chunk."""
    plugin, portable = exported
    tokens = (ngal + 1) * (plugin.config.num_desc + 2)
    assert tokens > CHUNK and tokens % CHUNK
    feeds = _packed_window(plugin.io, batch, ngal, plugin.config.num_scales, seed=batch + ngal)
    ref = pluginref_session(plugin.path, threads=2)
    plain = ort.InferenceSession(str(portable.path), providers=["CPUExecutionProvider"])
    (got,) = ref.run(None, feeds)
    (want,) = plain.run(None, feeds)
    assert got.shape == (batch, ngal) and got.dtype == np.float32
    assert _rel_err(got, want) <= TOLERANCE


@pytest.mark.parametrize(("batch", "ngal"), [(1, 1), (2, 5)])
def test_plugin_flavor_matches_torch(exported, batch, ngal):
    plugin, _ = exported
    model = load_checkpoint(SHIPPED).eval()
    args = example_inputs(model.config, plugin.io, batch, ngal, seed=7 + ngal)
    with torch.no_grad():
        expected = model(*args).numpy()
    session = pluginref_session(plugin.path)
    feeds = {s.name: a.numpy() for s, a in zip(plugin.io.inputs, args, strict=True)}
    (scores,) = session.run(None, feeds)
    assert _rel_err(scores, expected) <= TOLERANCE


def test_gated_fp16_node_round_trips(tmp_path):
    """A hand-built node with z, FP16 I/O and FP32 weights (plugin version 2): the rewrite
    casts to float32 and back, and the result is the library's FP16 scan."""
    from locore.native import selective_scan_cpu

    helper, tp = onnx.helper, onnx.TensorProto
    rng = np.random.default_rng(0)
    b, L, h, p, g, n = 1, 70, 2, 3, 1, 4
    arrays = {
        "x": rng.standard_normal((b, L, h, p)),
        "dt": rng.uniform(0.01, 0.3, (b, L, h)),
        "A": -rng.uniform(0.5, 1.5, h),
        "B": rng.standard_normal((b, L, g, n)),
        "C": rng.standard_normal((b, L, g, n)),
        "D": rng.standard_normal(h),
        "dt_bias": np.zeros(h),
        "z": rng.standard_normal((b, L, h, p)),
    }
    # Plugin version 2: A, D and dt_bias FP32, the rest FP16.
    arrays = {
        k: v.astype(np.float32 if k in scan_spec.WEIGHT_INPUTS else np.float16)
        for k, v in arrays.items()
    }
    attrs = scan_spec.node_attributes(reverse=1, chunk_size=16)
    node = helper.make_node(
        scan_spec.OP_TYPE, list(scan_spec.INPUT_NAMES), ["y"], domain=scan_spec.DOMAIN, **attrs
    )
    graph = helper.make_graph(
        [node],
        "scan",
        [
            helper.make_tensor_value_info(
                k, tp.FLOAT if v.dtype == np.float32 else tp.FLOAT16, v.shape
            )
            for k, v in arrays.items()
        ],
        [helper.make_tensor_value_info("y", tp.FLOAT16, arrays["x"].shape)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(scan_spec.DOMAIN, 1)],
    )
    path = tmp_path / "gated.onnx"
    onnx.save(model, str(path))
    (y,) = pluginref_session(path).run(None, arrays)
    want = selective_scan_cpu(**arrays, reverse=True, chunk_size=16)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, want)


def test_refuses_models_without_scan_nodes(exported):
    _, portable = exported
    with pytest.raises(ValueError, match="not a plugin-flavor model"):
        pluginref_session(portable.path)
    with pytest.raises(FileNotFoundError):
        pluginref_session(portable.path.with_name("missing.onnx"))


def test_pluginref_does_not_import_torch():
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import locore.runtime.backends.pluginref, locore.native\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

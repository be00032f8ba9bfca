"""FP16 and INT8 (Q/DQ) variants (locore.calibration): structure (strong typing, Q/DQ rules,
the plugin node's FP32 weights), onnx.checker, ONNX Runtime CPU runs, score error against FP32
with stated tolerances, the calibration-range methods against independent computations, and
bad input.

Tolerances (the shipped tiny model, scores are logits of magnitude <= ~8, random windows):
- fp16: max |score - fp32| <= 0.02 (measured ~1e-3: only the dense layers and the scan's I/O
  are FP16, one FP16 rounding of each of their inputs/weights ~ 5e-4 relative);
- int8: mean |score - fp32| <= 0.1 and max <= 0.6, Kendall tau of each window's gallery order
  >= 0.9 (measured: mean 0.05, max 0.15 on these windows; INT8 has 2^-7 relative steps).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from locore import scan_spec as spec
from locore.calibration import CalibrationSet, calibrate, make_precision, read_metadata
from locore.calibration.graph import (
    FLOAT,
    FLOAT16,
    dense_layers,
    is_scan_node,
    strong_typing_problems,
    tensor_types,
)
from locore.calibration.int8 import activation_amax, entropy_threshold
from locore.calibration.report import kendall_tau, open_session, top_k_overlap
from locore.config import graph_io
from locore.errors import OutputError, UsageError

FLAVORS = ("portable", "plugin")


def _windows(
    io_inputs, num_scales: int, count: int, seed: int, gallery: int = 12
) -> CalibrationSet:
    """Random packed windows (unit descriptors, a few near-duplicates of the query)."""
    rng = np.random.default_rng(seed)
    shapes = {s.name: s.shape for s in io_inputs}
    nd, dl = shapes["query_desc"][1], shapes["query_desc"][2]
    q = rng.standard_normal((count, nd, dl)).astype(np.float32)
    g = rng.standard_normal((count, gallery, nd, dl)).astype(np.float32)
    g[:, :3] = q[:, None] + 0.3 * g[:, :3]
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    g /= np.linalg.norm(g, axis=-1, keepdims=True)
    feeds = {
        "query_desc": q,
        "query_mask": rng.random((count, nd)) > 0.1,
        "gallery_desc": g,
        "gallery_mask": rng.random((count, gallery, nd)) > 0.1,
        "query_scale": rng.integers(0, num_scales, (count, nd)),
        "gallery_scale": rng.integers(0, num_scales, (count, gallery, nd)),
    }
    feeds["query_mask"][:, 0] = True
    return CalibrationSet({k: v for k, v in feeds.items() if k in shapes}, {"seed": seed})


@pytest.fixture(scope="module")
def models(shipped_onnx, tmp_path_factory):
    """flavor -> {precision: path} for the shipped model (fp32 export, fp16, int8)."""
    folder = tmp_path_factory.mktemp("precision")
    out = {}
    for flavor in FLAVORS:
        fp32 = shipped_onnx(flavor)
        config, io = read_metadata(fp32)
        calib = _windows(io.inputs, config.num_scales, count=6, seed=0)
        paths = {"fp32": fp32}
        for precision in ("fp16", "int8"):
            paths[precision] = folder / f"{flavor}-{precision}.onnx"
            calibrate(fp32, paths[precision], precision, calib=calib, threads=2)
        out[flavor] = paths
    return out


@pytest.mark.slow
@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_variant_is_strongly_typed_and_passes_the_checker(models, flavor, precision):
    proto = onnx.load(str(models[flavor][precision]))
    onnx.checker.check_model(proto)
    types = tensor_types(proto)
    assert strong_typing_problems(proto, types) == []
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["locore.precision"] == precision and meta["locore.flavor"] == flavor
    # Graph I/O keeps the FP32 contract: the runtime packs the same feeds.
    assert [i.type.tensor_type.elem_type for i in proto.graph.input][:1] == [FLOAT]
    assert proto.graph.output[0].type.tensor_type.elem_type == FLOAT
    scans = [n for n in proto.graph.node if is_scan_node(n)]
    assert bool(scans) == (flavor == "plugin")
    for node in scans:
        attrs = {a.name: a for a in node.attribute}
        assert attrs["plugin_version"].s.decode() == spec.PLUGIN_VERSION == "2"
        for pos, name in enumerate(node.input):
            tensor = spec.INPUTS[pos]
            if tensor.name in spec.WEIGHT_INPUTS:
                assert types[name] == FLOAT, (node.name, tensor.name)
            else:
                want = FLOAT16 if precision == "fp16" else FLOAT
                assert types[name] == want, (node.name, tensor.name)


@pytest.mark.slow
def test_fp16_keeps_norms_reductions_and_the_scan_state_fp32(models):
    proto = onnx.load(str(models["portable"]["fp16"]))
    types = tensor_types(proto)
    fp32_ops = {"CumSum", "Exp", "Softplus", "ReduceMean", "Sqrt", "Pow", "ReduceL2", "ReduceSum"}
    for node in proto.graph.node:
        if node.op_type in fp32_ops:
            assert types[node.output[0]] == FLOAT, node.name
    dense = {d.name for d in dense_layers(proto)}
    halves = [n for n in proto.graph.node if n.op_type == "MatMul" and n.name in dense]
    assert halves and all(types[n.output[0]] == FLOAT16 for n in halves)
    # The scan's MatMuls (two activations: the state's accumulations) stay FP32.
    scan_mm = [n for n in proto.graph.node if n.op_type == "MatMul" and n.name not in dense]
    assert scan_mm and all(types[n.output[0]] == FLOAT for n in scan_mm)


@pytest.mark.slow
@pytest.mark.parametrize("flavor", FLAVORS)
def test_int8_qdq_placement_follows_the_tensorrt_rules(models, flavor):
    base = onnx.load(str(models[flavor]["fp32"]))
    proto = onnx.load(str(models[flavor]["int8"]))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    base_inits = {i.name: numpy_helper.to_array(i) for i in base.graph.initializer}
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers = dense_layers(base)
    config, _ = read_metadata(models[flavor]["fp32"])
    # desc/match projections, (in, out) projections per layer, classifier
    assert len(layers) == 2 + 2 * config.n_layers + 1
    by_name = {n.name: n for n in proto.graph.node}
    for layer in layers:
        mm = by_name[layer.name]
        act_dq, w_dq = (next(n for n in proto.graph.node if i in n.output) for i in mm.input[:2])
        assert act_dq.op_type == w_dq.op_type == "DequantizeLinear"
        # weights: INT8 initializer, per output channel (axis 1), zero points 0, and the
        # dequantized weight is the FP32 weight to within half a step (numpy oracle)
        w_q, w_scale, w_zp = (inits[i] for i in w_dq.input)
        assert w_q.dtype == np.int8 and w_zp.dtype == np.int8 and not w_zp.any()
        assert {a.name: a.i for a in w_dq.attribute}["axis"] == 1
        weight = base_inits[layer.weight]
        assert w_scale.dtype == np.float32 and w_scale.shape == (weight.shape[1],)
        np.testing.assert_allclose(w_scale, np.abs(weight).max(axis=0) / 127, rtol=1e-6)
        assert np.all(np.abs(w_q * w_scale - weight) <= w_scale / 2 + 1e-7)
        # activation: per tensor (scalar scale), symmetric, Q -> DQ on the FP32 activation
        q = next(n for n in proto.graph.node if act_dq.input[0] in n.output)
        assert q.op_type == "QuantizeLinear" and q.input[0] == layer.activation
        scale, zp = inits[q.input[1]], inits[q.input[2]]
        assert scale.shape == () and scale.dtype == np.float32 and zp.dtype == np.int8 and zp == 0
    # Q/DQ nowhere else: every DequantizeLinear feeds a dense layer's MatMul, never a scan.
    dense_names = {layer.name for layer in layers}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear":
            assert {c.name for c in consumers[node.output[0]]} <= dense_names
        if is_scan_node(node):
            for name in node.input:
                src = next((n for n in proto.graph.node if name in n.output), None)
                assert src is None or src.op_type not in ("QuantizeLinear", "DequantizeLinear")


@pytest.mark.slow
@pytest.mark.parametrize("flavor", FLAVORS)
def test_scores_stay_close_to_fp32_in_onnx_runtime(models, flavor):
    config, io = read_metadata(models[flavor]["fp32"])
    heldout = _windows(io.inputs, config.num_scales, count=4, seed=99, gallery=17)
    sessions = {p: open_session(path, threads=2) for p, path in models[flavor].items()}
    for feeds in heldout.windows():
        ref = sessions["fp32"].run(None, feeds)[0]
        half = sessions["fp16"].run(None, feeds)[0]
        int8 = sessions["int8"].run(None, feeds)[0]
        assert half.dtype == int8.dtype == np.float32 and half.shape == ref.shape == (1, 17)
        assert np.abs(half - ref).max() <= 0.02
        assert np.abs(int8 - ref).mean() <= 0.1 and np.abs(int8 - ref).max() <= 0.6
        assert kendall_tau(ref[0], int8[0]) >= 0.9 and top_k_overlap(ref[0], int8[0]) >= 0.7


def test_range_methods_against_independent_computations():
    rng = np.random.default_rng(5)
    data = [rng.standard_normal(5000).astype(np.float32) for _ in range(3)]
    data[1][17] = 40.0  # one outlier
    windows = [{"i": np.array(i)} for i in range(3)]

    def run(feeds):
        return [data[int(feeds["i"])]]

    everything = np.abs(np.concatenate(data))
    minmax = activation_amax(run, windows, ["t"], "minmax")["t"]
    assert minmax == pytest.approx(everything.max())
    pct = activation_amax(run, windows, ["t"], "percentile")["t"]
    step = everything.max() / 2048
    assert abs(pct - np.percentile(everything, 99.99)) <= 2 * step
    ent = activation_amax(run, windows, ["t"], "entropy")["t"]
    assert 2.0 < ent < 10.0  # the outlier is clipped, the Gaussian body kept
    # entropy on a uniform histogram keeps (nearly) the whole range
    assert entropy_threshold(np.ones(2048), 1.0) >= 0.95 * 2048
    # an activation within [-1, 1] (the RBF match embedding) is never clipped: its rare large
    # values are the matches
    rbf = [np.concatenate([rng.random(5000) * 0.05, [0.97]]).astype(np.float32)]

    def run_rbf(feeds):
        return rbf

    for method in ("entropy", "percentile"):
        assert activation_amax(run_rbf, windows[:1], ["t"], method)["t"] == pytest.approx(0.97)


def test_kendall_tau_and_overlap_by_hand():
    assert kendall_tau(np.array([1, 2, 3]), np.array([10, 20, 30])) == 1.0
    assert kendall_tau(np.array([1, 2, 3]), np.array([3, 2, 1])) == -1.0
    # one discordant pair of three: (2 - 1) / 3
    assert kendall_tau(np.array([1, 2, 3]), np.array([1, 3, 2])) == pytest.approx(1 / 3)
    assert top_k_overlap(np.arange(20.0), np.arange(20.0)[::-1], k=10) == 0.0
    assert top_k_overlap(np.arange(20.0), np.arange(20.0), k=10) == 1.0


@pytest.mark.slow
def test_bad_input_is_refused_clearly(models, tmp_path):
    fp32 = models["portable"]["fp32"]
    config, io = read_metadata(fp32)
    with pytest.raises(
        UsageError, match=r"precision must be one of \['fp16', 'int8'\], got 'int4'"
    ):
        calibrate(fp32, tmp_path / "x.onnx", "int4")
    with pytest.raises(UsageError, match="calibration method must be one of"):
        calibrate(fp32, tmp_path / "x.onnx", "int8", method="mse")
    with pytest.raises(OutputError, match="is the input model"):
        calibrate(fp32, fp32, "fp16")
    # a calibration set of another model: the input and both shapes are named
    other = graph_io(config.__class__(desc_dim=16, num_desc=5, num_scales=4)).inputs
    bad = _windows(other, 4, count=2, seed=1)
    with pytest.raises(UsageError) as err:
        calibrate(fp32, tmp_path / "x.onnx", "int8", calib=bad)
    assert "query_desc" in str(err.value) and "[2, 5, 16]" in str(err.value)
    assert "['?', 48, 128]" in str(err.value)
    # an FP16 file is not calibrated again
    with pytest.raises(UsageError, match="already fp16"):
        make_precision(onnx.load(str(models["portable"]["fp16"])), "int8")
    assert not list(tmp_path.iterdir())  # nothing written, no temp file left


@pytest.mark.slow
def test_cli_calibrate_fp16_and_bad_set(models, tmp_path, capsys):
    from locore.cli import main

    fp32 = models["portable"]["fp32"]
    out = tmp_path / "m16.onnx"
    assert (
        main(["calibrate", "--onnx", str(fp32), "--precision", "fp16", "--output", str(out)]) == 0
    )
    config, _ = read_metadata(fp32)
    dense = 2 + 2 * config.n_layers + 1  # desc/match projections, (in, out) per layer, classifier
    assert f"fp16, portable flavor, {dense} dense layers" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(str(out)))
    bad = _windows(
        graph_io(config.__class__(desc_dim=16, num_desc=5, num_scales=4)).inputs, 4, 2, 1
    )
    bad.save(tmp_path / "bad.npz")
    argv = ["calibrate", "--onnx", str(fp32), "--precision", "int8", "--output",
            str(tmp_path / "m8.onnx"), "--calib", str(tmp_path / "bad.npz")]  # fmt: skip
    assert main(argv) == 2
    assert "query_desc" in capsys.readouterr().err
    assert not (tmp_path / "m8.onnx").exists()

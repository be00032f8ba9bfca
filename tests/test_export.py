"""torch -> ONNX: the portable flavor in ONNX Runtime and the plugin flavor's node contract.

The plugin flavor's numbers (in ONNX Runtime through the CPU library) are checked in
tests/test_pluginref.py."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from locore import LocoreConfig, scan_spec
from locore.cli import main
from locore.export import ExportError, example_inputs, export_onnx, read_onnx_config
from locore.model import LocoreReranker, save_checkpoint, selective_scan_ref


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def _feeds(io, args) -> dict[str, np.ndarray]:
    return {s.name: a.numpy() for s, a in zip(io.inputs, args, strict=True)}


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return LocoreReranker(LocoreConfig.preset("tiny")).eval()


@pytest.fixture(scope="module")
def portable(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny_portable.onnx"
    return export_onnx(tiny_model, path, flavor="portable")


@pytest.fixture(scope="module")
def plugin(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny_plugin.onnx"
    return export_onnx(tiny_model, path, flavor="plugin")


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("ngal", [1, 37, 100])
def test_portable_matches_torch(tiny_model, portable, batch, ngal):
    sess = ort.InferenceSession(str(portable.path), providers=["CPUExecutionProvider"])
    args = example_inputs(tiny_model.config, portable.io, batch, ngal, seed=batch * 1000 + ngal)
    with torch.no_grad():
        expected = tiny_model(*args).numpy()
    (scores,) = sess.run(None, _feeds(portable.io, args))
    assert scores.shape == (batch, ngal) and scores.dtype == np.float32
    assert _rel_err(scores, expected) <= 1e-4


def test_portable_graph_contract(portable):
    proto = onnx.load(str(portable.path))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"Loop", "Scan", "If", "SelectiveScan"}, ops
    assert {"CumSum", "Exp", "MatMul"} <= ops
    assert not proto.functions
    names = [i.name for i in proto.graph.input]
    assert names == [s.name for s in portable.io.inputs]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[2].type.tensor_type.shape.dim]
    assert dims == ["batch", "num_gallery", 48, 128]
    cfg, io, flavor = read_onnx_config(portable.path)
    assert cfg == portable.config and flavor == "portable"
    assert [i["name"] for i in io["inputs"]] == names
    onnx.checker.check_model(proto)


def test_plugin_graph_contract(plugin):
    proto = onnx.load(str(plugin.path))
    scans = [n for n in proto.graph.node if n.op_type == "SelectiveScan"]
    n_layers = plugin.config.n_layers
    assert len(scans) == 2 * n_layers  # a forward and a reverse scan per block
    assert all(n.domain == scan_spec.DOMAIN for n in scans)
    assert not any(f.name == "SelectiveScan" for f in proto.functions)
    for node in scans:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert set(attrs) == {a.name for a in scan_spec.ATTRIBUTES}
        assert attrs["plugin_version"] == scan_spec.PLUGIN_VERSION.encode() == b"2"
        assert attrs["plugin_namespace"] == scan_spec.PLUGIN_NAMESPACE.encode() == b"locore"
        assert attrs["variant"] == b"mamba2" and attrs["dt_softplus"] == 0
        assert attrs["chunk_size"] == plugin.config.chunk_size
        assert len(node.input) == scan_spec.MIN_INPUTS == 7  # no z
    assert (
        sorted(
            onnx.helper.get_attribute_value(a)
            for n in scans
            for a in n.attribute
            if a.name == "reverse"
        )
        == [0] * n_layers + [1] * n_layers
    )
    assert ("locore", 1) in [(o.domain, o.version) for o in proto.opset_import]


@pytest.mark.slow
def test_cli_export_and_config_mismatch(tiny_model, tmp_path, capsys):
    ckpt = save_checkpoint(tiny_model, tmp_path / "ckpt")
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(out)]) == 0
    assert out.is_file() and "portable flavor" in capsys.readouterr().out
    other = LocoreConfig.preset("tiny", d_state=8)
    cfg_path = tmp_path / "other.json"
    other.save(cfg_path)
    with pytest.raises(ExportError, match="d_state: config 8 vs checkpoint 16"):
        export_onnx(ckpt, tmp_path / "x.onnx", config=other)
    code = main(
        [
            "export",
            "--checkpoint",
            str(ckpt),
            "--output",
            str(tmp_path / "y.onnx"),
            "--config",
            str(cfg_path),
        ]
    )
    assert code == 2 and "does not match" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["config"]["d_state"] == 16


@pytest.mark.slow
def test_short_sequences_keep_gallery_dynamic(tmp_path):
    """Few descriptors per image: a window of G images can be shorter than one chunk. The graph
    must still accept every G (torch.export freezes sizes that are 1 in the example)."""
    torch.manual_seed(1)
    cfg = LocoreConfig.preset("tiny", num_desc=6, desc_dim=8, num_scales=4, n_layers=1)
    model = LocoreReranker(cfg).eval()
    res = export_onnx(model, tmp_path / "short.onnx")
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    for batch, ngal in [(1, 1), (2, 2), (1, 3), (1, 7), (3, 20)]:
        args = example_inputs(cfg, res.io, batch, ngal, seed=ngal)
        with torch.no_grad():
            expected = model(*args).numpy()
        (scores,) = sess.run(None, _feeds(res.io, args))
        assert _rel_err(scores, expected) <= 1e-4, (batch, ngal)


def test_plugin_node_with_z_has_eight_inputs(tmp_path):
    """The gated scan (optional z) exports as one node with z as its 8th input."""
    from locore.export.scan_op import plugin_scan, translation_table

    class Gated(torch.nn.Module):
        def forward(self, x, dt, B, C, z):
            A = -torch.ones(x.shape[2])
            return plugin_scan(x=x, dt=dt, A=A, B=B, C=C, z=z, reverse=True, chunk_size=16)

    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(2, 40, 4, 8, generator=g), torch.randn(2, 40, 4, 8, generator=g)
    dt = torch.rand(2, 40, 4, generator=g) * 0.2
    B, C = torch.randn(2, 40, 1, 8, generator=g), torch.randn(2, 40, 1, 8, generator=g)
    program = torch.onnx.export(
        Gated().eval(), (x, dt, B, C, z), dynamo=True, custom_translation_table=translation_table()
    )
    nodes = [n for n in program.model_proto.graph.node if n.op_type == "SelectiveScan"]
    assert len(nodes) == 1 and len(nodes[0].input) == 8
    with torch.no_grad():
        eager = Gated()(x, dt, B, C, z)
    ref = selective_scan_ref(x, dt, -torch.ones(4), B, C, D=torch.zeros(4), z=z, reverse=True)
    torch.testing.assert_close(eager, ref, rtol=6e-4, atol=2e-3)


def test_plugin_node_takes_fp32_weights_with_fp16_x():
    """Plugin version 2: with FP16 activations the node's A, D and dt_bias stay FP32."""
    from locore.export.scan_op import plugin_scan, translation_table

    class Half(torch.nn.Module):
        def forward(self, x, dt, B, C):
            A = -torch.linspace(0.5, 1.5, x.shape[2])  # float32
            D = torch.ones(x.shape[2], dtype=torch.float16)  # cast to float32 by the op
            return plugin_scan(x=x, dt=dt, A=A, B=B, C=C, D=D, chunk_size=16)

    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 33, 4, 8, generator=g).half()
    dt = (torch.rand(1, 33, 4, generator=g) * 0.2).half()
    B, C = (torch.randn(1, 33, 1, 8, generator=g).half() for _ in range(2))
    program = torch.onnx.export(
        Half().eval(), (x, dt, B, C), dynamo=True, custom_translation_table=translation_table()
    )
    proto = onnx.shape_inference.infer_shapes(program.model_proto)
    types = {
        v.name: v.type.tensor_type.elem_type for v in (*proto.graph.value_info, *proto.graph.input)
    }
    types.update({i.name: i.data_type for i in proto.graph.initializer})
    (node,) = [n for n in proto.graph.node if n.op_type == scan_spec.OP_TYPE]
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    for pos, name in enumerate(node.input):
        tensor = scan_spec.INPUTS[pos]
        want = f32 if tensor.name in scan_spec.WEIGHT_INPUTS else f16
        assert types.get(name) == want, (tensor.name, types.get(name))
    onnx.checker.check_model(proto)


def test_export_options_are_validated_before_exporting(tmp_path):
    """opset 0 is refused (not quietly exported at 18); max_gallery -5 is a UsageError naming
    the option (not an AssertionError from torch.export)."""
    from locore.errors import UsageError

    model = LocoreReranker(LocoreConfig.preset("tiny", n_layers=1)).eval()
    for opset in (0, 16, 10_000, True, "18"):
        with pytest.raises(
            UsageError, match=f"opset must be an integer from 17 to .*got {opset!r}"
        ):
            export_onnx(model, tmp_path / "m.onnx", opset=opset)  # type: ignore[arg-type]
    for bad in (-5, 0, 2.5):
        with pytest.raises(UsageError, match=f"max_gallery .* positive integer, got {bad!r}"):
            export_onnx(model, tmp_path / "m.onnx", max_gallery=bad)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())

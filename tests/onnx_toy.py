"""A small real ONNX re-ranker that honours the graph I/O contract, for runtime tests.

Not a learned model: the score of gallery image g is
``LOGIT_SCALE * mean_i cos(q_mean, g_i) + SCALE_WEIGHT * mean_i scale(g_i)`` over its valid
descriptors i, where ``q_mean`` is the masked mean of the query descriptors (plus the dot
product of the global vectors for ``use_global`` configs). It is written with standard ONNX ops
so ONNX Runtime runs it for real; :func:`toy_scores` is the same formula in numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from locore import config as C  # the graph I/O tensor names: C.QUERY_DESC, ...
from locore.config import LocoreConfig, graph_io

LOGIT_SCALE = 10.0
SCALE_WEIGHT = 0.01
EPS = 1e-6
_ELEM = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "bool": TensorProto.BOOL,
    "int64": TensorProto.INT64,
}


def toy_config(**overrides: object) -> LocoreConfig:
    """A small config: 6 descriptors of dimension 8, 4 scales."""
    data: dict[str, object] = dict(desc_dim=8, num_desc=6, num_scales=4, name="toy")
    data.update(overrides)
    return LocoreConfig(**data)  # type: ignore[arg-type]


def build_toy_reranker(
    path: str | Path,
    config: LocoreConfig | None = None,
    *,
    with_scales: bool = True,
    float_dtype: str = "float32",
    metadata: bool = True,
    input_names: dict[str, str] | None = None,
) -> Path:
    """Write the toy re-ranker for ``config`` to ``path`` (with ``locore.*`` metadata)."""
    config = config or toy_config()
    gio = graph_io(config, with_scales=with_scales)
    rename = input_names or {}
    inputs = [
        helper.make_tensor_value_info(
            rename.get(s.name, s.name),
            _ELEM[float_dtype if s.dtype == "float" else s.dtype],
            list(s.shape),
        )
        for s in gio.inputs
    ]
    outputs = [
        helper.make_tensor_value_info(C.SCORES, TensorProto.FLOAT, list(gio.outputs[0].shape))
    ]
    name = {s.name: rename.get(s.name, s.name) for s in gio.inputs}

    def const(n: str, values: list[float] | list[int], dtype: int) -> onnx.TensorProto:
        return helper.make_tensor(n, dtype, [len(values)], values)

    inits = [
        const("ax1", [1], TensorProto.INT64),
        const("ax_last", [-1], TensorProto.INT64),
        const("ax12", [1, 2], TensorProto.INT64),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("eps", TensorProto.FLOAT, [], [EPS]),
        helper.make_tensor("logit_scale", TensorProto.FLOAT, [], [LOGIT_SCALE]),
        helper.make_tensor("scale_weight", TensorProto.FLOAT, [], [SCALE_WEIGHT]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    f = TensorProto.FLOAT
    n = helper.make_node

    def l2_normalized(x: str, out: str) -> list[onnx.NodeProto]:
        """``out = x / (||x|| + eps)`` along the last axis (``eps`` as in :func:`toy_scores`)."""
        return [
            n("Mul", [x, x], [f"{x}_sq"]),
            n("ReduceSum", [f"{x}_sq", "ax_last"], [f"{x}_sq_sum"], keepdims=1),
            n("Sqrt", [f"{x}_sq_sum"], [f"{x}_norm0"]),
            n("Add", [f"{x}_norm0", "eps"], [f"{x}_norm"]),
            n("Div", [x, f"{x}_norm"], [out]),
        ]

    def masked_mean(x: str, mask: str, axis: str, out: str) -> list[onnx.NodeProto]:
        """``out = sum(x * mask) / max(sum(mask), 1)`` over ``axis`` (``mask`` broadcasts
        against ``x``): the mean of the valid entries, 0 when there are none."""
        return [
            n("Mul", [x, mask], [f"{out}_xm"]),
            n("ReduceSum", [f"{out}_xm", axis], [f"{out}_sum"], keepdims=0),
            n("ReduceSum", [mask, axis], [f"{out}_cnt0"], keepdims=0),
            n("Max", [f"{out}_cnt0", "one"], [f"{out}_cnt"]),
            n("Div", [f"{out}_sum", f"{out}_cnt"], [out]),
        ]

    nodes = [
        n("Cast", [name[C.QUERY_DESC]], ["qd"], to=f),
        n("Cast", [name[C.GALLERY_DESC]], ["gd"], to=f),
        n("Cast", [name[C.QUERY_MASK]], ["qm"], to=f),
        n("Cast", [name[C.GALLERY_MASK]], ["gm"], to=f),
        # masked mean of the query descriptors, L2-normalised: [B, Dl]
        n("Unsqueeze", ["qm", "ax_last"], ["qm_u"]),
        *masked_mean("qd", "qm_u", "ax1", "q_mean"),
        *l2_normalized("q_mean", "q_n"),
        # L2-normalised gallery descriptors: [B, G, Nd, Dl]
        *l2_normalized("gd", "g_n"),
        # cosine of each gallery descriptor with the query mean, masked mean per image: [B, G]
        n("Unsqueeze", ["q_n", "ax12"], ["q_n4"]),
        n("Mul", ["g_n", "q_n4"], ["prod"]),
        n("ReduceSum", ["prod", "ax_last"], ["cos"], keepdims=0),
        *masked_mean("cos", "gm", "ax_last", "cos_mean"),
        n("Mul", ["cos_mean", "logit_scale"], ["s_cos"]),
    ]
    last = "s_cos"
    if with_scales:
        nodes += [
            n("Cast", [name[C.GALLERY_SCALE]], ["gs"], to=f),
            *masked_mean("gs", "gm", "ax_last", "gs_mean"),
            n("Mul", ["gs_mean", "scale_weight"], ["s_scale"]),
            n("Add", [last, "s_scale"], ["s_with_scale"]),
            # the query scales take part with weight 0, so the input is used
            n("Cast", [name[C.QUERY_SCALE]], ["qs"], to=f),
            n("ReduceSum", ["qs"], ["qs_sum"], keepdims=0),
            n("Mul", ["qs_sum", "zero"], ["qs_zero"]),
            n("Add", ["s_with_scale", "qs_zero"], ["s_scales"]),
        ]
        last = "s_scales"
    if config.use_global:
        nodes += [
            n("Cast", [name[C.QUERY_GLOBAL]], ["qg"], to=f),
            n("Cast", [name[C.GALLERY_GLOBAL]], ["gg"], to=f),
            n("Unsqueeze", ["qg", "ax1"], ["qg_u"]),
            n("Mul", ["gg", "qg_u"], ["g_prod"]),
            n("ReduceSum", ["g_prod", "ax_last"], ["g_dot"], keepdims=0),
            n("Add", [last, "g_dot"], ["s_global"]),
        ]
        last = "s_global"
    nodes.append(n("Identity", [last], [C.SCORES]))
    graph = helper.make_graph(nodes, "locore_toy", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(
            model,
            {
                "locore.config": config.to_json(),
                "locore.graph_io": json.dumps(gio.to_dict()),
            },
        )
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save_model(model, str(path))
    return path


def toy_scores(feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The toy model's scores [B, G] float32, computed with numpy."""
    qd = feeds[C.QUERY_DESC].astype(np.float64)
    gd = feeds[C.GALLERY_DESC].astype(np.float64)
    qm = feeds[C.QUERY_MASK].astype(np.float64)
    gm = feeds[C.GALLERY_MASK].astype(np.float64)
    q_mean = (qd * qm[..., None]).sum(1) / np.maximum(qm.sum(1, keepdims=True), 1.0)
    q_n = q_mean / (np.linalg.norm(q_mean, axis=-1, keepdims=True) + EPS)
    g_n = gd / (np.linalg.norm(gd, axis=-1, keepdims=True) + EPS)
    cos = (g_n * q_n[:, None, None, :]).sum(-1)
    g_cnt = np.maximum(gm.sum(-1), 1.0)
    scores = LOGIT_SCALE * (cos * gm).sum(-1) / g_cnt
    if C.GALLERY_SCALE in feeds:
        scores += SCALE_WEIGHT * (feeds[C.GALLERY_SCALE] * gm).sum(-1) / g_cnt
    if C.GALLERY_GLOBAL in feeds:
        qg = feeds[C.QUERY_GLOBAL].astype(np.float64)
        gg = feeds[C.GALLERY_GLOBAL].astype(np.float64)
        scores += (gg * qg[:, None, :]).sum(-1)
    return scores.astype(np.float32)


def random_rows(
    rng: np.random.Generator, num_images: int, rows: int, config: LocoreConfig, pad_from: int = 0
) -> dict[str, np.ndarray]:
    """Random ``LocalFeatures`` fields (keyword arguments): ``num_images`` x ``rows``, the last
    rows of some images padding (at least ``pad_from`` valid rows each), weights descending."""
    desc = rng.standard_normal((num_images, rows, config.desc_dim)).astype(np.float32)
    valid_count = rng.integers(max(1, pad_from), rows + 1, size=num_images)
    mask = np.arange(rows)[None, :] < valid_count[:, None]
    weights = np.sort(rng.random((num_images, rows)).astype(np.float32), axis=1)[:, ::-1]
    return {
        "xy": rng.random((num_images, rows, 2)).astype(np.float32),
        "scales": rng.integers(0, config.num_scales, size=(num_images, rows)),
        "mask": mask,
        "weights": np.where(mask, weights, 0.0).astype(np.float32),
        "descriptors": np.where(mask[..., None], desc, 0.0).astype(np.float32),
    }

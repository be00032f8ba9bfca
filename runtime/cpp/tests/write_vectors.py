"""Shared test vectors of the C++ runtime, written (and re-checked) with the Python runtime.

The C++ core (runtime/cpp) mirrors :mod:`locore.runtime.packing`,
:mod:`locore.runtime.sliding_windows`, :func:`locore.runtime.ames.from_rows` and
:func:`locore.runtime.metadata.parse_model_metadata`. This module draws random cases, computes
what the Python runtime makes of each, and writes them as one JSON file that the C++ test binary
(``locore_runtime_vector_tests``, registered with ctest) checks case by case:

- ``half``: float32 values and their float16 bits (numpy's ``astype``, round to nearest even);
- ``window_starts``: schedules (or the error message) for lengths 0..1200, all four orders;
- ``params_errors``: invalid :class:`RerankParams` and Python's message;
- ``rerank``: :func:`sliding_window_rerank` of shortlists of 1..1000 ids with a deterministic
  scorer that depends on each item, its position in the window, the window's length and its
  first item (so a wrong window gives a wrong order): the re-ranked ids and fused scores;
- ``packing``: :class:`Packer` inputs (config, input specs and dtypes, per-image features with
  different row counts, NaN in padding rows) and its outputs as raw bytes (hex), or the
  :class:`PackingError` message;
- ``reranker``: :class:`Reranker` end to end with a scorer that reads the packed arrays;
- ``ames_rows``: :func:`from_rows` on one image's AMES rows;
- ``metadata``: :func:`parse_model_metadata` of ``locore.config`` / ``locore.graph_io`` strings.

What "identical" means (the C++ test's checks): packed arrays byte for byte (dtype, shape and
bytes), re-ranked ids exactly, error messages exactly (metadata errors: the prefix naming the
entry), fused scores within :data:`FUSED_SCORE_ATOL`. Fused scores are float64 in both languages,
computed by the same operations in the same order from the scorer's float32 logits (widened to
float64) and the float64 global similarities; only ``tanh`` comes from different libraries
(numpy's SIMD kernels vs the C library), which may differ in the last bit.

Usage::

    python runtime/cpp/tests/write_vectors.py OUT.json            # the full set (>= 1000 each)
    python runtime/cpp/tests/write_vectors.py OUT.json --small    # the committed sample
    python runtime/cpp/tests/write_vectors.py --verify FILE.json  # recompute every case
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from locore.config import (
    GALLERY_DESC,
    GALLERY_GLOBAL,
    GALLERY_MASK,
    GALLERY_SCALE,
    META_CONFIG,
    META_GRAPH_IO,
    QUERY_DESC,
    SCORES,
    ConfigError,
    LocoreConfig,
    TensorSpec,
    graph_io,
)
from locore.errors import UsageError
from locore.runtime import sliding_windows
from locore.runtime.ames import FormatError, from_rows
from locore.runtime.local_features import LocalFeatures
from locore.runtime.metadata import parse_model_metadata
from locore.runtime.packing import Packer, PackingError
from locore.runtime.sliding_windows import (
    ORDERS,
    Reranker,
    RerankParams,
    sliding_window_rerank,
    window_starts,
)

FORMAT = 1
FUSED_SCORE_ATOL = 1e-12
"""Largest allowed |C++ - Python| of a fused score (float64; see the module docstring)."""
HASH_MOD = 1_000_003
HASH_ITEM, HASH_POS, HASH_LEN, HASH_FIRST = 2_654_435_761, 40_503, 97, 13
MAX_ID = 1_000_000  # ids stay below this (the hash fits int64 in C++)

Json = dict[str, Any]

# ---- the deterministic scorers (the C++ test implements the same formulas) -----------------


def hash_logits(window: np.ndarray, mode: str) -> np.ndarray:
    """Logits [w] float32 of a window of ids: ``v = (id * 2654435761 + j * 40503 + w * 97 +
    first * 13) mod 1000003`` for the item at window position ``j``; ``hash``:
    ``float32(v / 1000003 * 20 - 10)``, ``coarse``: ``float32(v mod 5 - 2)`` (many ties)."""
    items = np.asarray(window, dtype=np.int64)
    w = items.shape[0]
    v = (items * HASH_ITEM + np.arange(w, dtype=np.int64) * HASH_POS + w * HASH_LEN) % HASH_MOD
    v = (v + int(items[0]) * HASH_FIRST) % HASH_MOD
    if mode == "coarse":
        return (v % 5 - 2).astype(np.float32)
    return (v.astype(np.float64) / float(HASH_MOD) * 20.0 - 10.0).astype(np.float32)


def content_logits(feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Scores [1, G] float32 read from the packed arrays of one query: for gallery image g,
    ``a * 10 + c * 0.37 - g * 0.11 + s * 0.05 + q`` (+ ``2 * gallery_global[0, g, 0]``) with
    ``a = gallery_desc[0, g, 0, 0]``, ``c`` its valid rows, ``s = gallery_scale[0, g, 0]`` (0
    without scales) and ``q = query_desc[0, 0, 0]``, in float64, left to right."""
    gd, gm = feeds[GALLERY_DESC], feeds[GALLERY_MASK]
    q = float(feeds[QUERY_DESC][0, 0, 0])
    out = np.zeros((1, gd.shape[1]), dtype=np.float32)
    for g in range(gd.shape[1]):
        a = float(gd[0, g, 0, 0])
        c = int(np.count_nonzero(gm[0, g]))
        s = float(feeds[GALLERY_SCALE][0, g, 0]) if GALLERY_SCALE in feeds else 0.0
        value = a * 10.0 + c * 0.37 - g * 0.11 + s * 0.05 + q
        if GALLERY_GLOBAL in feeds:
            value += float(feeds[GALLERY_GLOBAL][0, g, 0]) * 2.0
        out[0, g] = np.float32(value)
    return out


class _ContentBackend:
    """The part of a Backend that :class:`Reranker` uses, scoring with :func:`content_logits`."""

    max_gallery = None

    def __init__(self, config: LocoreConfig, specs: Sequence[TensorSpec]) -> None:
        self.config = config
        self._specs = tuple(specs)

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._specs

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {SCORES: content_logits(feeds)}


# ---- JSON encoding of numbers and features -------------------------------------------------


def floats(values: np.ndarray) -> list[float | str]:
    """float32/float64 values as JSON numbers, non-finite ones as "nan", "inf", "-inf"."""
    out: list[float | str] = []
    for v in np.asarray(values, dtype=np.float64).ravel().tolist():
        out.append(v if math.isfinite(v) else ("nan" if math.isnan(v) else repr(v)))
    return out


def unfloats(values: Sequence[float | str], dtype: type = np.float32) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=dtype)


def tensor_json(array: np.ndarray) -> Json:
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.name, "shape": list(array.shape), "hex": array.tobytes().hex()}


def features_json(f: Json) -> Json:
    """One image: num_rows, desc_dim, descriptors [T * D], mask [T] (0/1), scales [T], global."""
    out: Json = {
        "num_rows": int(f["descriptors"].shape[0]),
        "desc_dim": int(f["descriptors"].shape[1]),
        "descriptors": floats(f["descriptors"]),
        "mask": [int(m) for m in f["mask"]],
        "scales": [int(s) for s in f["scales"]],
    }
    if f.get("global") is not None:
        out["global"] = floats(f["global"])
    return out


def features_from_json(data: Json) -> Json:
    rows, dim = data["num_rows"], data["desc_dim"]
    return {
        "descriptors": unfloats(data["descriptors"]).reshape(rows, dim),
        "mask": np.array(data["mask"], dtype=bool).reshape(rows),
        "scales": np.array(data["scales"], dtype=np.int64).reshape(rows),
        "global": unfloats(data["global"]) if "global" in data else None,
    }


def stack(images: Sequence[Json], rows: int | None = None) -> LocalFeatures:
    """Python's batch of images with different row counts: each padded to the largest count with
    masked zero rows (what the packer itself does), as one LocalFeatures [N, T, D]."""
    t = max(int(f["descriptors"].shape[0]) for f in images) if rows is None else rows
    dim = int(images[0]["descriptors"].shape[1])
    n = len(images)
    desc = np.zeros((n, t, dim), dtype=np.float32)
    mask = np.zeros((n, t), dtype=bool)
    scales = np.zeros((n, t), dtype=np.int64)
    for i, f in enumerate(images):
        r = f["descriptors"].shape[0]
        desc[i, :r] = f["descriptors"]
        mask[i, :r] = f["mask"]
        scales[i, :r] = f["scales"]
    globals_ = [f.get("global") for f in images]
    global_desc = None
    if all(g is not None for g in globals_):
        global_desc = np.stack([np.asarray(g, dtype=np.float32) for g in globals_])
    with np.errstate(invalid="ignore"):
        return LocalFeatures(
            descriptors=desc,
            scales=scales,
            xy=np.zeros((n, t, 2), dtype=np.float32),
            weights=np.zeros((n, t), dtype=np.float32),
            mask=mask,
            global_desc=global_desc,
        )


def single(f: Json) -> LocalFeatures:
    batch = stack([f])
    return batch[0]


# ---- solving one case with the Python runtime ----------------------------------------------


def params_of(data: Json) -> RerankParams:
    return RerankParams(**data)


def solve_window_starts(case: Json) -> Json:
    try:
        starts = window_starts(case["length"], case["window"], case["stride"], case["order"])
    except UsageError as exc:
        return {"error": str(exc)}
    return {"starts": starts}


def solve_params_error(case: Json) -> Json:
    try:
        params_of(case["params"])
    except UsageError as exc:
        return {"error": str(exc)}
    raise AssertionError(f"params {case['params']} are valid; expected an error")


@contextlib.contextmanager
def libm_tanh() -> Iterator[None]:
    """Within: the runtime's sigmoid computes tanh with the C library (``math.tanh``, as C++'s
    ``std::tanh``) instead of numpy's SIMD kernels, which differ from it in the last bit or two."""
    original = sliding_windows.sigmoid

    def sigmoid(x: np.ndarray) -> np.ndarray:
        half = 0.5 * np.asarray(x, dtype=np.float64)
        tanh = np.array([math.tanh(v) for v in half.ravel().tolist()], dtype=np.float64)
        return 0.5 * (1.0 + tanh.reshape(half.shape))

    sliding_windows.sigmoid = sigmoid
    try:
        yield
    finally:
        sliding_windows.sigmoid = original


def tie_sensitive(solve: Callable[[Json], Json], case: Json, result: Json) -> Json:
    """``result`` plus, when the order depends on the last bit of tanh (fused scores that tie
    within an ulp, e.g. a sigmoid saturated at a high temperature), the result with the C
    library's tanh as ``alt_expected_ids`` / ``alt_expected_scores``: either is correct."""
    if "expected_ids" not in result:
        return result
    with libm_tanh():
        alt = solve(case)
    if alt["expected_ids"] != result["expected_ids"]:
        result = {
            **result,
            "alt_expected_ids": alt["expected_ids"],
            "alt_expected_scores": alt["expected_scores"],
        }
    return result


def _solve_rerank(case: Json) -> Json:
    mode = case["scorer"]
    ids = np.array(case["ids"], dtype=np.int64)
    sims = unfloats(case["sims"], np.float64)
    try:
        params = params_of(case["params"])
        new_ids, scores = sliding_window_rerank(ids, sims, lambda w: hash_logits(w, mode), params)
    except UsageError as exc:
        return {"error": str(exc)}
    k = min(params.topk, len(ids))
    if not np.array_equal(scores[k:], sims[k:]):
        raise AssertionError("scores beyond the top K must be the similarities")
    # beyond the top K the scores are the similarities (the C++ test checks them against sims)
    return {"expected_ids": new_ids.tolist(), "expected_scores": floats(scores[:k])}


def solve_rerank(case: Json) -> Json:
    return tie_sensitive(_solve_rerank, case, _solve_rerank(case))


def _specs(case: Json) -> list[TensorSpec]:
    return [TensorSpec.from_dict(s) for s in case["inputs"]]


def solve_packing(case: Json) -> Json:
    config = LocoreConfig.from_dict(case["config"])
    packer = Packer(config, _specs(case), clip_scales=case["clip_scales"])
    query = [features_from_json(f) for f in case["queries"]]
    galleries = [[features_from_json(f) for f in g] for g in case["galleries"]]
    try:
        if case["query_batch"]:
            rows = max(
                max(f["descriptors"].shape[0] for f in query),
                max(f["descriptors"].shape[0] for g in galleries for f in g),
            )
            q = stack(query, rows)
            flat = [f for g in galleries for f in g]
            gal = stack(flat, rows)
            n_g = len(galleries[0])
            gal = LocalFeatures(
                descriptors=gal.descriptors.reshape(len(query), n_g, rows, -1),
                scales=gal.scales.reshape(len(query), n_g, rows),
                xy=gal.xy.reshape(len(query), n_g, rows, 2),
                weights=gal.weights.reshape(len(query), n_g, rows),
                mask=gal.mask.reshape(len(query), n_g, rows),
                global_desc=None
                if gal.global_desc is None
                else gal.global_desc.reshape(len(query), n_g, -1),
            )
        else:
            q = single(query[0])
            gal = stack(galleries[0])
        with np.errstate(over="ignore", invalid="ignore"):
            feeds = packer.pack(q, gal)
    except PackingError as exc:
        return {"error": str(exc)}
    has_valid = np.asarray(feeds[GALLERY_MASK], dtype=bool).any(axis=-1)
    return {
        "expected": {name: tensor_json(array) for name, array in feeds.items()},
        "gallery_has_valid": [int(v) for v in has_valid.ravel()],
    }


def _solve_reranker(case: Json) -> Json:
    config = LocoreConfig.from_dict(case["config"])
    backend = _ContentBackend(config, _specs(case))
    reranker = Reranker(backend, params_of(case["params"]))
    database = stack([features_from_json(f) for f in case["database"]])
    query = single(features_from_json(case["query"]))
    try:
        result = reranker.rerank(
            query,
            database,
            np.array(case["ids"], dtype=np.int64),
            unfloats(case["sims"], np.float64),
        )
    except (UsageError, PackingError) as exc:
        return {"error": str(exc)}
    k = min(reranker.params.topk, len(case["ids"]))
    return {
        "expected_ids": result.ids.tolist(),
        "expected_scores": floats(result.scores[:k]),
        "calls": reranker.calls,
    }


def solve_reranker(case: Json) -> Json:
    return tie_sensitive(_solve_reranker, case, _solve_reranker(case))


def solve_ames(case: Json) -> Json:
    width = case["row_width"]
    rows = unfloats(case["rows"]).reshape(-1, width)
    try:
        with np.errstate(invalid="ignore"):
            f = from_rows(rows)
    except FormatError as exc:
        return {"error": str(exc)}
    return {
        "expected": {
            "descriptors": tensor_json(f.descriptors),
            "scales": tensor_json(f.scales),
            "mask": tensor_json(f.mask.astype(np.uint8)),
            "xy": tensor_json(f.xy),
            "weights": tensor_json(f.weights),
        }
    }


def error_prefix(text: str) -> str:
    """What both languages must say of a metadata error: the text up to and including " is
    invalid" or " is not valid JSON" (the rest quotes the parser), else up to the first ";"."""
    ends = [text.find(m) + len(m) for m in (" is invalid", " is not valid JSON") if m in text]
    if not ends and ";" in text:
        ends = [text.index(";")]
    return text[: min(ends)] if ends else text


def solve_metadata(case: Json) -> Json:
    try:
        config, gio = parse_model_metadata(case["metadata"], "vectors.onnx")
    except ConfigError as exc:
        return {"error_prefix": error_prefix(str(exc))}
    return {
        "expected_config": config.to_dict(),
        "expected_graph_io": None if gio is None else gio.to_dict(),
    }


SOLVERS: dict[str, Callable[[Json], Json]] = {
    "window_starts": solve_window_starts,
    "params_errors": solve_params_error,
    "rerank": solve_rerank,
    "packing": solve_packing,
    "reranker": solve_reranker,
    "ames_rows": solve_ames,
    "metadata": solve_metadata,
}
OUTPUT_KEYS = {
    "error",
    "error_prefix",
    "starts",
    "expected",
    "expected_ids",
    "expected_scores",
    "alt_expected_ids",
    "alt_expected_scores",
    "expected_config",
    "expected_graph_io",
    "gallery_has_valid",
    "calls",
}


# ---- drawing random cases ------------------------------------------------------------------


def _length(rng: np.random.Generator, low: int, high: int) -> int:
    """Log-uniform half of the time (short lists are common), else uniform."""
    if rng.random() < 0.5:
        return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
    return int(rng.integers(low, high + 1))


def draw_params(rng: np.random.Generator, length: int, order: str) -> Json:
    window = int(rng.choice([1, 2, 3, 5, 7, 10, 16, 50, 100, 150]) if rng.random() < 0.5 else 0)
    if window == 0:
        window = int(rng.integers(1, 151))
    stride = int(rng.integers(1, window + 1)) if rng.random() < 0.7 else int(max(1, window // 2))
    if rng.random() < 0.1:
        stride = window
    topk_choice = rng.random()
    if topk_choice < 0.3:
        topk = 400
    elif topk_choice < 0.5:
        topk = length + int(rng.integers(0, 50))
    else:
        topk = int(rng.integers(1, max(2, length + 1)))
    alpha = float(rng.choice([0.0, 0.5, 1.0, 0.25, 0.9]) if rng.random() < 0.6 else rng.random())
    temperature = float(
        rng.choice([0.1, 1.0, 0.05]) if rng.random() < 0.6 else rng.uniform(0.01, 5)
    )
    return {
        "window": window,
        "topk": topk,
        "stride": stride,
        "order": order,
        "alpha": alpha,
        "temperature": temperature,
    }


def draw_sims(rng: np.random.Generator, n: int) -> np.ndarray:
    """Descending float32 similarities; quantized to 1/4096 most of the time (ties)."""
    sims = np.sort(rng.uniform(-1.0, 1.0, size=n))[::-1]
    if rng.random() < 0.7:
        sims = np.round(sims * 4096.0) / 4096.0
    if rng.random() < 0.1:
        sims = np.round(sims * 8.0) / 8.0  # many exact ties
    return sims.astype(np.float32)


def draw_window_starts(rng: np.random.Generator, i: int) -> Json:
    order = ORDERS[i % 4]
    length = int(rng.integers(0, 1201)) if rng.random() < 0.5 else int(rng.integers(0, 30))
    window = int(rng.integers(1, 160))
    stride = int(rng.integers(1, window + 1))
    if rng.random() < 0.05:
        stride = window + int(rng.integers(1, 5))  # an error
    return {"length": length, "window": window, "stride": stride, "order": order}


def draw_params_errors() -> list[Json]:
    base = RerankParams().to_dict()
    bad: list[dict[str, Any]] = [
        {"window": 0},
        {"topk": -3},
        {"stride": 0},
        {"window": 10, "stride": 11},
        {"order": "sideways"},
        {"alpha": 1.5},
        {"alpha": -0.25},
        {"temperature": 0.0},
        {"temperature": -1e-05},
        {"alpha": 1.0000001},
        {"temperature": 1e16 * -1},
    ]
    return [{"params": {**base, **b}} for b in bad]


def draw_rerank(rng: np.random.Generator, i: int, max_len: int) -> Json:
    order = ORDERS[i % 4]
    length = 1 if i == 0 else max_len if i == 1 else _length(rng, 1, max_len)
    ids = rng.choice(MAX_ID, size=length, replace=False)
    case: Json = {
        "ids": [int(v) for v in ids],
        "sims": floats(draw_sims(rng, length)),
        "params": draw_params(rng, length, order),
        "scorer": "coarse" if rng.random() < 0.25 else "hash",
    }
    if rng.random() < 0.01:
        case["sims"][int(rng.integers(0, length))] = str(rng.choice(["nan", "inf", "-inf"]))
    return case


def draw_image(
    rng: np.random.Generator,
    rows: int,
    dim: int,
    num_scales: int,
    *,
    valid: float = 0.8,
    global_dim: int = 0,
    nan_padding: bool = False,
) -> Json:
    desc = rng.standard_normal((rows, dim))
    kind = rng.random()
    if kind < 0.6:
        desc = np.round(desc * 64.0) / 64.0  # short JSON, exact in float16 too
    elif kind < 0.8:
        desc = desc * 2000.0  # float16 rounding on every value
    desc = desc.astype(np.float32)
    mask = rng.random(rows) < valid
    scales = rng.integers(0, num_scales, size=rows)
    if nan_padding and (~mask).any():
        desc[np.argmax(~mask), 0] = np.nan
    f: Json = {"descriptors": desc, "mask": mask, "scales": scales}
    if global_dim:
        f["global"] = rng.standard_normal(global_dim).astype(np.float32)
    return f


def draw_model(
    rng: np.random.Generator, max_desc: int = 12, max_dim: int = 10
) -> tuple[Json, Json]:
    """A small config and its input specs (dtypes resolved: float32/float16 floats; masks and
    scale ids sometimes in other integer or float dtypes)."""
    use_global = bool(rng.random() < 0.3)
    config = LocoreConfig(
        desc_dim=int(rng.integers(1, max_dim + 1)),
        num_desc=int(rng.integers(1, max_desc + 1)),
        num_scales=int(rng.integers(1, 6)),
        use_global=use_global,
        global_dim=int(rng.integers(1, 5)) if use_global else 0,
        name=f"vectors-{int(rng.integers(0, 1000))}",
    )
    float_dtype = "float16" if rng.random() < 0.3 else "float32"
    mask_dtype = str(rng.choice(["bool", "bool", "bool", "int32", "int64", "uint8", "float32"]))
    scale_dtype = str(rng.choice(["int64", "int64", "int32", "float32"]))
    specs = []
    for spec in graph_io(config, with_scales=bool(rng.random() < 0.8)).inputs:
        dtype = spec.dtype
        if dtype == "float":
            dtype = float_dtype
        elif dtype == "bool":
            dtype = mask_dtype
        elif dtype == "int64":
            dtype = scale_dtype
        specs.append(TensorSpec(spec.name, spec.shape, dtype, spec.description).to_dict())
    return config.to_dict(), {"inputs": specs, "float_dtype": float_dtype}


def draw_packing(rng: np.random.Generator, small: bool = False) -> Json:
    config_dict, model = draw_model(rng, *((5, 4) if small else (12, 10)))
    config = LocoreConfig.from_dict(config_dict)
    nd, dl, ns = config.num_desc, config.desc_dim, config.num_scales
    batch = bool(rng.random() < 0.15)
    n_q = int(rng.integers(2, 4)) if batch else 1
    n_g = int(rng.integers(1, 5 if small else 13))
    gdim = config.global_dim if config.use_global else 0
    same_rows = bool(rng.random() < 0.3)
    fixed_rows = int(rng.integers(0, 2 * nd + 3))

    def rows() -> int:
        return fixed_rows if same_rows else int(rng.integers(0, 2 * nd + 3))

    queries = [
        draw_image(rng, max(1, rows()), dl, ns, valid=0.9, global_dim=gdim) for _ in range(n_q)
    ]
    for q in queries:  # a query needs a valid row among its first Nd (most of the time)
        q["mask"][0] = True
    galleries = [
        [
            draw_image(rng, rows(), dl, ns, global_dim=gdim, nan_padding=bool(rng.random() < 0.3))
            for _ in range(n_g)
        ]
        for _ in range(n_q)
    ]
    everything = queries + [f for g in galleries for f in g]
    problem = rng.random()
    if problem < 0.05:  # an empty query
        queries[-1]["mask"][:] = False
    elif problem < 0.10:  # a scale id out of range on a valid row
        f = everything[int(rng.integers(0, len(everything)))]
        if f["mask"].any():
            f["scales"][int(np.argmax(f["mask"]))] = int(rng.choice([-1, ns, ns + 3]))
    elif problem < 0.14:  # NaN / inf on a valid row
        f = everything[int(rng.integers(0, len(everything)))]
        if f["mask"][:nd].any():
            f["descriptors"][int(np.argmax(f["mask"][:nd])), -1] = rng.choice([np.nan, np.inf])
    elif problem < 0.18:  # a float16 overflow
        f = everything[int(rng.integers(0, len(everything)))]
        if f["mask"][:nd].any():
            f["descriptors"][int(np.argmax(f["mask"][:nd])), 0] = 70000.0
    elif problem < 0.21:  # another descriptor dimension (for a whole role, one row count)
        role = queries if rng.random() < 0.5 else [f for g in galleries for f in g]
        if batch:  # Python names the batch's common row count: keep one count for all
            role = []
        t = max(1, rows())
        for f in role:
            f.update(draw_image(rng, t, dl + 1, ns, global_dim=gdim))
            f["mask"][0] = True
    elif problem < 0.25 and gdim:  # global vectors: missing, wrong size, non-finite
        kind = rng.random()
        role = queries if rng.random() < 0.5 else [f for g in galleries for f in g]
        for f in role:
            if kind < 0.33:
                f["global"] = None
            elif kind < 0.66:
                f["global"] = rng.standard_normal(gdim + 1).astype(np.float32)
        if kind >= 0.66:
            role[0]["global"] = np.full(gdim, np.nan, dtype=np.float32)
    return {
        "config": config_dict,
        "inputs": model["inputs"],
        "float_dtype": model["float_dtype"],
        "clip_scales": bool(rng.random() < 0.3),
        "query_batch": batch,
        "queries": [features_json(q) for q in queries],
        "galleries": [[features_json(f) for f in g] for g in galleries],
    }


def draw_reranker(rng: np.random.Generator, i: int, small: bool = False) -> Json:
    config_dict, model = draw_model(rng, *((3, 2) if small else (6, 4)))
    config = LocoreConfig.from_dict(config_dict)
    nd, dl, ns = config.num_desc, config.desc_dim, config.num_scales
    gdim = config.global_dim if config.use_global else 0
    n_db = int(rng.integers(1, 12 if small else 40))
    database = [
        draw_image(rng, int(rng.integers(0, 2 * nd + 2)), dl, ns, valid=0.7, global_dim=gdim)
        for _ in range(n_db)
    ]
    query = draw_image(rng, int(rng.integers(1, 2 * nd + 2)), dl, ns, global_dim=gdim)
    query["mask"][0] = True
    length = _length(rng, 1, 40 if small else 120)
    ids = rng.integers(0, n_db, size=length)
    sims = draw_sims(rng, length)
    problem = rng.random()
    if problem < 0.03:
        ids[int(rng.integers(0, length))] = int(rng.choice([-1, n_db, n_db + 5]))
    elif problem < 0.05:
        query["mask"][:] = False
    params = draw_params(rng, length, ORDERS[i % 4])
    params["window"] = min(params["window"], 30)
    params["stride"] = min(params["stride"], params["window"])
    return {
        "config": config_dict,
        "inputs": model["inputs"],
        "float_dtype": model["float_dtype"],
        "query": features_json(query),
        "database": [features_json(f) for f in database],
        "ids": [int(v) for v in ids],
        "sims": floats(sims),
        "params": params,
    }


def draw_ames(rng: np.random.Generator) -> Json:
    t = int(rng.integers(0, 12))
    dim = int(rng.integers(1, 6))
    width = 5 + dim
    rows = rng.standard_normal((t, width)).astype(np.float32)
    rows[:, 0:2] = rng.random((t, 2))
    mask_valid = rng.random(t) < 0.7
    rows[:, 3] = np.where(mask_valid, 0.0, 1.0)
    rows[:, 2] = rng.integers(0, 8, size=t) + rng.choice([0.0, 0.0004, -0.0004], size=t)
    rows[~mask_valid, 2] = rng.choice(
        [np.nan, -3.0, 2.5, 5.0, 2.0**21], size=int((~mask_valid).sum())
    )
    if t:
        problem = rng.random()
        r = int(rng.integers(0, t))
        if problem < 0.1:
            rows[r, 3] = 0.5
        elif problem < 0.2:
            rows[r, 3], rows[r, 2] = 0.0, 2.5
        elif problem < 0.3:
            rows[r, 3], rows[r, 2] = 0.0, float(rng.choice([-1.0, 2.0**20, np.inf]))
        elif problem < 0.4:
            rows[r, 3] = 0.0
            rows[r, int(rng.choice([0, 4, 5]))] = np.nan
        elif problem < 0.5:
            rows[r, 3] = 1.0
            rows[r, 5] = np.inf  # padding may hold anything
    return {"row_width": width, "rows": floats(rows)}


def draw_metadata(rng: np.random.Generator) -> Json:
    use_global = bool(rng.random() < 0.4)
    config = LocoreConfig(
        desc_dim=int(rng.choice([128, 768, 8])),
        num_desc=int(rng.choice([48, 6, 100])),
        use_global=use_global,
        global_dim=int(rng.integers(1, 1000)) if use_global else 0,
        aggregation=str(rng.choice(["start", "end", "mean", "max"])),
        dropout=float(rng.choice([0.0, 0.1])),
        name=str(rng.choice(["tiny", "custom", 'é ü "quoted"'])),
        extra={"note": "x", "n": [1, 2.5]} if rng.random() < 0.3 else {},
    )
    gio = graph_io(
        config, with_scales=bool(rng.random() < 0.7), with_token_logits=bool(rng.random() < 0.3)
    )
    metadata = {META_CONFIG: config.to_json(), META_GRAPH_IO: json.dumps(gio.to_dict())}
    problem = rng.random()
    if problem < 0.1:
        del metadata[META_GRAPH_IO]
    elif problem < 0.15:
        del metadata[META_CONFIG]
    elif problem < 0.2:
        metadata[META_CONFIG] = json.dumps({**config.to_dict(), "future_key": 1})
    elif problem < 0.25:
        metadata[META_CONFIG] = json.dumps({**config.to_dict(), "num_desc": 0})
    elif problem < 0.3:
        data = gio.to_dict()
        data["inputs"][0]["dtype"] = "complex64"
        metadata[META_GRAPH_IO] = json.dumps(data)
    elif problem < 0.35:
        data = gio.to_dict()
        data["inputs"].append(data["inputs"][0])
        metadata[META_GRAPH_IO] = json.dumps(data)
    elif problem < 0.4:
        metadata[META_GRAPH_IO] = metadata[META_GRAPH_IO][:-1]
    return {"metadata": metadata}


def draw_half(rng: np.random.Generator, count: int) -> Json:
    """float32 values around every float16 regime: subnormals, exact ties, the overflow edge."""
    exps = rng.integers(-27, 17, size=count)
    values = rng.uniform(1.0, 2.0, size=count) * np.exp2(exps.astype(np.float64))
    values *= rng.choice([-1.0, 1.0], size=count)
    values = values.astype(np.float32)
    halves = rng.integers(0, 0x7BFF, size=count // 4).astype(np.uint16).view(np.float16)
    ties = (halves.astype(np.float32) + np.spacing(halves).astype(np.float32) / 2).astype(
        np.float32
    )
    edge = np.array(
        [65504, 65519, 65520, 65536, 6e-8, 5.960464477539063e-08, 2.9802322e-08, 0.0, -0.0],
        dtype=np.float32,
    )
    allv = np.concatenate([values, ties, edge]).astype(np.float32)
    with np.errstate(over="ignore"):
        bits = allv.astype(np.float16).view(np.uint16)
    return {"values": floats(allv), "bits": [int(b) for b in bits]}


def quiet_reranker() -> None:
    """The Reranker warns about gallery images without descriptors: the cases hold some on
    purpose."""
    logging.getLogger(sliding_windows.__name__).setLevel(logging.ERROR)


def build(seed: int = 0, small: bool = False) -> Json:
    """All cases for ``seed``: the full set (>= 1000 shortlists and packings), or the small
    sample (``small``)."""
    quiet_reranker()
    rng = np.random.default_rng(seed)
    n_starts, n_rerank, n_pack, n_e2e, n_ames, n_meta = (
        (24, 24, 16, 8, 10, 10) if small else (2000, 1200, 1000, 200, 200, 120)
    )
    max_len = 60 if small else 1000
    data: Json = {
        "format": FORMAT,
        "generator": "runtime/cpp/tests/write_vectors.py",
        "seed": seed,
        "fused_score_atol": FUSED_SCORE_ATOL,
        "half": draw_half(rng, 200 if small else 20000),
        "window_starts": [draw_window_starts(rng, i) for i in range(n_starts)],
        "params_errors": draw_params_errors(),
        "rerank": [draw_rerank(rng, i, max_len) for i in range(n_rerank)],
        "packing": [draw_packing(rng, small) for _ in range(n_pack)],
        "reranker": [draw_reranker(rng, i, small) for i in range(n_e2e)],
        "ames_rows": [draw_ames(rng) for _ in range(n_ames)],
        "metadata": [draw_metadata(rng) for _ in range(n_meta)],
    }
    for kind, solver in SOLVERS.items():
        for case in data[kind]:
            case.update(solver(case))
    return data


def verify(data: Json) -> list[str]:
    """Recompute every case of ``data`` (a vectors file) with the Python runtime; one line per
    difference (ids, packed bytes, messages exactly; fused scores within FUSED_SCORE_ATOL; a
    tie-sensitive case may give either of its two recorded orders)."""
    quiet_reranker()
    problems: list[str] = []
    if data.get("format") != FORMAT:
        return [f"format {data.get('format')!r}, expected {FORMAT}"]
    values = unfloats(data["half"]["values"])
    with np.errstate(over="ignore"):
        bits = values.astype(np.float16).view(np.uint16).tolist()
    if bits != data["half"]["bits"]:
        problems.append("half: float16 bits differ")
    for kind, solver in SOLVERS.items():
        for i, case in enumerate(data[kind]):
            inputs = {k: v for k, v in case.items() if k not in OUTPUT_KEYS}
            fresh = solver(inputs)
            outputs = {k for k in case if k in OUTPUT_KEYS and not k.startswith("alt_")}
            if {k for k in fresh if not k.startswith("alt_")} != outputs:
                problems.append(f"{kind}[{i}]: outputs {sorted(outputs)}, now {sorted(fresh)}")
                continue
            use_alt = "alt_expected_ids" in case and case["alt_expected_ids"] == fresh.get(
                "expected_ids"
            )
            for key in outputs:
                alt = use_alt and key in ("expected_ids", "expected_scores")
                got, want = case["alt_" + key if alt else key], fresh[key]
                if key == "expected_scores":
                    diff = np.abs(unfloats(got, np.float64) - unfloats(want, np.float64))
                    if diff.size and float(diff.max()) > FUSED_SCORE_ATOL:
                        problems.append(f"{kind}[{i}]: fused scores differ by {diff.max():.3g}")
                elif got != want:
                    problems.append(f"{kind}[{i}]: {key} differs")
    return problems


def write(path: str | Path, seed: int = 0, small: bool = False) -> Json:
    """Write the vectors of :func:`build` to ``path`` (compact JSON, no NaN literals)."""
    data = build(seed, small)
    text = json.dumps(data, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")
    return data


def count_cases(data: Json) -> dict[str, int]:
    return {kind: len(data[kind]) for kind in SOLVERS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="vectors file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="the small committed sample")
    parser.add_argument("--verify", metavar="FILE", help="recompute the cases of FILE")
    args = parser.parse_args(argv)
    if args.verify:
        data = json.loads(Path(args.verify).read_text(encoding="utf-8"))
        problems = verify(data)
        for line in problems[:50]:
            print(line)
        print(
            f"{args.verify}: {sum(count_cases(data).values())} cases, {len(problems)} differences"
        )
        return 1 if problems else 0
    if not args.out:
        parser.error("give OUT (a file to write) or --verify FILE")
    data = write(args.out, args.seed, args.small)
    counts = ", ".join(f"{n} {kind}" for kind, n in count_cases(data).items())
    print(f"wrote {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

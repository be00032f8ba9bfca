"""The SelectiveScan CPU library (plugins/selective_scan, via locore.native.binding) against the
torch reference ``selective_scan_ref``.

Tolerances, as in mamba-ssm's tests, relative to the output scale s = max |y_ref|:
  fp32: |y - y_ref| <= (2e-3 + 6e-4 * |y_ref| / s) * s   (rtol 6e-4, atol 2e-3 on y / s)
  fp16: |y - y_ref| <= (5e-3 + 3e-3 * |y_ref| / s) * s   (rtol 3e-3, atol 5e-3 on y / s)
The fp16 reference runs on the same fp16 inputs upcast to fp32, so the tolerance covers the
kernel's arithmetic and the fp16 rounding of its output, not the rounding of the inputs.

The library is built through the wrapper when it is not built yet; the tests skip only when
no CMake or C++ compiler exists to build it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import zlib

import numpy as np
import pytest
import torch

from locore import native
from locore.model.selective_scan import selective_scan_ref
from locore.native.binding import ScanParams
from locore.scan_spec import Status

TOL = {np.float32: (6e-4, 2e-3), np.float16: (3e-3, 5e-3)}


def _seed(*key: object) -> int:
    """A fixed seed per test case (not Python's per-process string hash)."""
    return zlib.crc32(repr(key).encode())


def _have_toolchain() -> bool:
    compilers = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
    return shutil.which("cmake") is not None and any(c and shutil.which(c) for c in compilers)


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    if native.find_cpu_library() is None and not _have_toolchain():
        pytest.skip("the SelectiveScan CPU library is not built and no cmake/C++ compiler exists")
    return native.load_cpu_library()


def _inputs(
    seed: int,
    variant: str = "mamba2",
    batch: int = 2,
    length: int = 65,
    heads: int = 4,
    hdim: int = 6,
    groups: int = 1,
    nstate: int = 12,
    dtype: type = np.float32,
    gated: bool = False,
    softplus: bool = False,
    with_d: bool = True,
) -> dict:
    rng = np.random.default_rng(seed)
    xshape = (batch, length, heads, hdim) if variant == "mamba2" else (batch, length, heads)
    ashape = (heads,) if variant == "mamba2" else (heads, nstate)
    if softplus:
        dt = rng.uniform(-4.0, 0.5, (batch, length, heads))
        bias = rng.uniform(-1.0, 1.0, heads)
    else:
        dt = rng.uniform(0.01, 0.3, (batch, length, heads))
        bias = None
    arrays = {
        "x": rng.standard_normal(xshape),
        "dt": dt,
        "A": -np.exp(rng.uniform(-1.0, 1.0, ashape)),
        "B": rng.standard_normal((batch, length, groups, nstate)),
        "C": rng.standard_normal((batch, length, groups, nstate)),
        "D": rng.standard_normal(heads) if with_d else None,
        "z": rng.standard_normal(xshape) if gated else None,
        "dt_bias": bias,
    }
    out = {k: (None if v is None else v.astype(dtype)) for k, v in arrays.items()}
    out.update(dt_softplus=softplus, variant=variant)
    return out


def _reference(kw: dict, reverse: bool) -> np.ndarray:
    """selective_scan_ref on the same values, upcast to float32."""
    t = {
        k: (torch.from_numpy(v.astype(np.float32)) if isinstance(v, np.ndarray) else v)
        for k, v in kw.items()
    }
    return selective_scan_ref(**t, reverse=reverse).numpy()


def _assert_close(y: np.ndarray, ref: np.ndarray, dtype: type) -> None:
    rtol, atol = TOL[dtype]
    assert y.shape == ref.shape
    scale = float(np.abs(ref).max()) if ref.size else 1.0
    scale = scale if scale > 0 else 1.0
    np.testing.assert_allclose(
        y.astype(np.float32) / scale, ref / scale, rtol=rtol, atol=atol, err_msg=f"{dtype}"
    )


def _check_library(kw: dict, reverse: bool = False, **call) -> np.ndarray:
    """Run the library on the inputs ``kw`` (``call``: chunk_size, num_threads) and check that
    it returns x's dtype and agrees with the reference; returns its output."""
    dtype = kw["x"].dtype.type
    y = native.selective_scan_cpu(**kw, reverse=reverse, **call)
    assert y.dtype == dtype
    _assert_close(y, _reference(kw, reverse), dtype)
    return y


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 63, 64, 65])
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("softplus", [False, True])
def test_mamba2_matches_reference(lib, dtype, reverse, length, grouped, gated, softplus):
    heads = 4
    seed = _seed("mamba2", dtype.__name__, reverse, length, grouped, gated, softplus)
    kw = _inputs(
        seed,
        length=length,
        heads=heads,
        groups=heads if grouped else 1,
        dtype=dtype,
        gated=gated,
        softplus=softplus,
    )
    _check_library(kw, reverse)


@pytest.mark.parametrize(
    ("dtype", "reverse", "grouped", "gated"),
    [(np.float32, False, False, True), (np.float16, True, True, False)],
)
def test_mamba2_long_sequence(lib, dtype, reverse, grouped, gated):
    """L = 5050 (the benchmark's length; 78 full chunks and a tail)."""
    heads = 2
    kw = _inputs(
        5050 + int(reverse),
        batch=1,
        length=5050,
        heads=heads,
        hdim=8,
        groups=heads if grouped else 1,
        nstate=16,
        dtype=dtype,
        gated=gated,
        softplus=True,
    )
    _check_library(kw, reverse)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 65])
@pytest.mark.parametrize("grouped", [False, True])
def test_mamba1_matches_reference(lib, dtype, reverse, length, grouped):
    channels = 6
    seed = _seed("mamba1", dtype.__name__, reverse, length, grouped)
    kw = _inputs(
        seed,
        variant="mamba1",
        length=length,
        heads=channels,
        groups=3 if grouped else 1,
        nstate=10,
        dtype=dtype,
        gated=True,
        softplus=True,
    )
    _check_library(kw, reverse)


def test_mamba1_many_channels(lib):
    """More channels than one row tile (64), so a group spans several tiles."""
    kw = _inputs(7, variant="mamba1", batch=1, length=40, heads=130, groups=2, nstate=16)
    _check_library(kw)


@pytest.mark.parametrize(
    ("heads", "hdim", "groups", "nstate"),
    [(6, 5, 3, 7), (3, 64, 1, 64), (8, 1, 2, 33), (2, 70, 2, 17)],
)
def test_mamba2_odd_shapes(lib, heads, hdim, groups, nstate):
    """Head sizes that are not multiples of the kernel's row block, odd state sizes."""
    kw = _inputs(
        heads * 1000 + hdim,
        length=70,
        heads=heads,
        hdim=hdim,
        groups=groups,
        nstate=nstate,
        gated=True,
        softplus=True,
    )
    for reverse in (False, True):
        _check_library(kw, reverse)


@pytest.mark.parametrize("variant", ["mamba2", "mamba1"])
def test_row_tiles_that_cross_heads(lib, variant):
    """Many threads for few heads: the row tiles split heads and straddle head boundaries."""
    heads, hdim = (3, 5) if variant == "mamba2" else (37, 1)
    kw = _inputs(21, variant=variant, batch=1, length=50, heads=heads, hdim=hdim, gated=True)
    for threads in (3, 8, 16):
        _check_library(kw, num_threads=threads)


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_every_cpu_dispatch_level(lib, monkeypatch, isa):
    """The x86-64 library holds AVX-512, AVX2 and baseline versions; cap the choice to test each
    (a level this CPU lacks falls back to the next one down)."""
    monkeypatch.setenv("LOCORE_SCAN_CPU_ISA", isa)
    for dtype, variant in ((np.float32, "mamba2"), (np.float16, "mamba2"), (np.float32, "mamba1")):
        heads, hdim = (3, 37) if variant == "mamba2" else (37, 1)
        kw = _inputs(
            _seed(isa, variant, dtype.__name__),
            variant=variant,
            batch=1,
            length=67,
            heads=heads,
            hdim=hdim,
            nstate=19,
            dtype=dtype,
            gated=True,
            softplus=True,
        )
        for reverse in (False, True):
            _check_library(kw, reverse, num_threads=3)


def test_without_d(lib):
    kw = _inputs(11, with_d=False, gated=True)
    _check_library(kw)


def test_chunk_size_and_threads_do_not_change_the_result(lib):
    kw = _inputs(12, batch=3, length=130, gated=True, softplus=True)
    base = _check_library(kw, chunk_size=64, num_threads=1)
    for chunk in (1, 7, 64, 1000):
        for threads in (0, 1, 2, 5):
            y = native.selective_scan_cpu(**kw, chunk_size=chunk, num_threads=threads)
            np.testing.assert_array_equal(y, base)


@pytest.mark.parametrize("variant", ["mamba2", "mamba1"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("gated", [False, True])
def test_fp16_io_with_fp32_weights(lib, variant, reverse, gated):
    """Plugin version 2: x, dt, B, C, z FP16 and A, D, dt_bias FP32. The weights must be read
    as FP32: the reference takes the same FP32 weights (not rounded to FP16)."""
    kw = _inputs(
        _seed("v2", variant, reverse, gated), variant=variant, length=77, groups=2,
        dtype=np.float16, gated=gated, softplus=True,
    )  # fmt: skip
    rng = np.random.default_rng(_seed("v2 weights", variant))
    ashape = kw["A"].shape
    # Weights with bits below FP16's precision, so a library reading them as FP16 would differ.
    kw["A"] = (-np.exp(rng.uniform(-1.0, 1.0, ashape))).astype(np.float32)
    kw["D"] = rng.standard_normal(kw["D"].shape).astype(np.float32)
    kw["dt_bias"] = rng.uniform(-1.0, 1.0, kw["dt_bias"].shape).astype(np.float32)
    y = _check_library(kw, reverse)
    assert y.dtype == np.float16
    # The same call with the weights rounded to FP16 (version 1's contract) also runs.
    v1 = {**kw, **{k: kw[k].astype(np.float16) for k in ("A", "D", "dt_bias")}}
    assert native.selective_scan_cpu(**v1, reverse=reverse).dtype == np.float16
    with pytest.raises(ValueError, match="A, D and dt_bias must all be float32"):
        native.selective_scan_cpu(**{**kw, "D": kw["D"].astype(np.float16)}, reverse=reverse)


def test_padding_tokens_leave_the_state_alone(lib):
    """dt = 0 tokens (padding) neither change the state nor add to it."""
    kw = _inputs(13, length=20)
    padded = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    padded["dt"][:, 5:9] = 0.0
    y = native.selective_scan_cpu(**padded)
    cut = {
        k: (np.delete(v, np.s_[5:9], axis=1) if k in ("x", "dt", "B", "C") else v)
        for k, v in padded.items()
    }
    y_cut = native.selective_scan_cpu(**cut)
    np.testing.assert_allclose(np.delete(y, np.s_[5:9], axis=1), y_cut, rtol=1e-6, atol=1e-6)


def test_empty_sequence(lib):
    kw = _inputs(14, length=0)
    y = native.selective_scan_cpu(**kw)
    assert y.shape == kw["x"].shape and y.dtype == np.float32


def test_non_contiguous_inputs_are_accepted(lib):
    kw = _inputs(15, length=33)
    kw["x"] = np.asfortranarray(kw["x"])
    _check_library(kw)


# --------------------------------------------------------------------------- bad arguments


def test_wrapper_rejects_bad_shapes_and_dtypes(lib):
    kw = _inputs(16, length=5)
    with pytest.raises(ValueError, match=r"dt must be \[2, 5, 4\] float32, got \[2, 4\]"):
        native.selective_scan_cpu(**{**kw, "dt": kw["dt"][:, 0]})
    with pytest.raises(ValueError, match="B must be"):
        native.selective_scan_cpu(**{**kw, "B": kw["B"][0]})
    with pytest.raises(ValueError, match="float32 or float16, got float64"):
        native.selective_scan_cpu(**{**kw, "x": kw["x"].astype(np.float64)})
    with pytest.raises(ValueError, match="x's dtype"):
        native.selective_scan_cpu(**{**kw, "A": kw["A"].astype(np.float16)})
    with pytest.raises(ValueError, match="must divide"):
        bad_b = np.zeros((2, 5, 3, 12), np.float32)
        native.selective_scan_cpu(**{**kw, "B": bad_b, "C": bad_b})
    with pytest.raises(ValueError, match="variant"):
        native.selective_scan_cpu(**{**kw, "variant": "mamba3"})
    with pytest.raises(ValueError, match="chunk_size"):
        native.selective_scan_cpu(**kw, chunk_size=0)
    with pytest.raises(ValueError, match=r"z must be \[2, 5, 4, 6\]"):
        native.selective_scan_cpu(**{**kw, "z": kw["x"][:, :, :, :3]})
    with pytest.raises(TypeError, match="numpy array"):
        native.selective_scan_cpu(**{**kw, "dt": kw["dt"].tolist()})
    with pytest.raises(ValueError, match=r"x's dtype \(float32\)"):
        native.selective_scan_cpu(**{**kw, "B": kw["B"].astype(np.float16)})


def test_unrelated_library_is_refused_with_the_missing_symbol(tmp_path, monkeypatch):
    """$LOCORE_SCAN_LIB naming another shared library: NativeLibraryError names the symbol."""
    import _ctypes  # a C extension module: a real shared library that is not ours

    from locore.native import binding

    monkeypatch.setenv("LOCORE_SCAN_LIB", str(_ctypes.__file__))
    monkeypatch.setattr(binding, "_lib", None)
    with pytest.raises(
        native.NativeLibraryError, match="does not export locore_selective_scan_cpu"
    ) as err:
        binding.load_cpu_library()
    assert "locore build-plugins" in str(err.value) and "LOCORE_SCAN_LIB" in str(err.value)


def test_library_reports_the_abi_version(lib):
    from locore import scan_spec

    assert getattr(lib, scan_spec.ABI_VERSION_FUNCTION)() == scan_spec.ABI_VERSION


def _params(**over) -> ScanParams:
    x = np.zeros((1, 4, 2, 3), np.float32)
    dt = np.zeros((1, 4, 2), np.float32)
    a = np.zeros(2, np.float32)
    b = np.zeros((1, 4, 1, 5), np.float32)
    y = np.zeros_like(x)
    fields = dict(
        batch=1, seqlen=4, nheads=2, headdim=3, ngroups=1, dstate=5, variant=0, dtSoftplus=0,
        reverse=0, chunkSize=64, dtype=0, x=x.ctypes.data, dt=dt.ctypes.data, A=a.ctypes.data,
        B=b.ctypes.data, C=b.ctypes.data, D=None, dtBias=None, z=None, y=y.ctypes.data,
    )  # fmt: skip
    fields.update(over)
    p = ScanParams(**fields)
    p._keep = (x, dt, a, b, y)  # type: ignore[attr-defined]
    return p


def test_c_abi_validates_arguments(lib):
    run = lib.locore_selective_scan_cpu
    assert run(ctypes.byref(_params()), 1) == Status.OK
    bad = [
        {"x": None},
        {"y": None},
        {"A": None},
        {"weightDtype": 7},
        {"batch": -1},
        {"seqlen": -3},
        {"nheads": 0},
        {"headdim": 0},
        {"dstate": 0},
        {"ngroups": 0},
        {"ngroups": 3},
        {"variant": 7},
        {"variant": 1},  # mamba1 needs headdim 1
        {"dtype": 5},
        {"chunkSize": 0},
        {"reverse": 2},
        {"dtSoftplus": -1},
    ]
    for over in bad:
        assert run(ctypes.byref(_params(**over)), 1) == Status.BAD_ARGUMENT, over
    assert run(None, 1) == Status.BAD_ARGUMENT
    assert run(ctypes.byref(_params()), -2) == Status.BAD_ARGUMENT
    # Nothing to compute: NULL tensors are fine when B * L == 0.
    assert run(ctypes.byref(_params(seqlen=0, x=None, y=None, dt=None, B=None, C=None)), 1) == 0
    for code in (0, 1, 2, 3, 99):
        assert lib.locore_scan_status_string(code)


def test_library_env_var_must_point_at_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv(native.LIBRARY_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(native.NativeLibraryError, match="not a file"):
        native.find_cpu_library()


def test_cli_registers_build_plugins():
    """The command layer exposes every option of ``locore.native.build_plugins``."""
    from locore.cli import build_parser

    args = build_parser(["build-plugins"]).parse_args(
        ["build-plugins", "--no-cuda", "--jobs", "2", "--build-dir", "/tmp/x"]
    )
    assert args.no_cuda and args.jobs == 2 and str(args.build_dir) == "/tmp/x"

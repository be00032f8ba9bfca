"""`locore build`: flag parsing and defaults, --print-trtexec, and what it says without TensorRT."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx", reason="the toy ONNX model is written with the onnx package")

from locore.cli import main  # noqa: E402
from locore.commands import build as B  # noqa: E402
from locore.deps import is_available  # noqa: E402
from tests.onnx_toy import build_toy_reranker  # noqa: E402

HAS_TRT = is_available("tensorrt")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    B.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_are_trtexecs() -> None:
    args = parse("--onnx", "m.onnx")
    assert args.strongly_typed is True
    assert (args.fp16, args.int8, args.version_compatible) == (False,) * 3
    assert args.hardware_compatibility_level == "none"
    assert args.dynamic_plugins == [] and args.builder_optimization_level is None
    args = parse(
        "--onnx", "m.onnx", "--no-stronglyTyped", "--fp16", "--vc",
        "--dynamicPlugins", "a.so", "--dynamicPlugins", "b.so",
    )  # fmt: skip
    assert not args.strongly_typed and args.fp16 and args.version_compatible
    assert args.dynamic_plugins == [Path("a.so"), Path("b.so")]


def test_print_trtexec_golden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_toy_reranker(tmp_path / "m.onnx")
    engine = str(tmp_path / "m.plan")
    flags = ["--window", "20", "--memPoolSize", "workspace:512", "--print-trtexec"]
    code = main(["build", "--onnx", str(model), "--saveEngine", engine, *flags])
    out = capsys.readouterr().out.strip()
    assert code == 0
    assert out == (
        f"trtexec --onnx={model} --saveEngine={tmp_path / 'm.plan'} "
        "--minShapes=query_desc:1x6x8,query_mask:1x6,gallery_desc:1x1x6x8,gallery_mask:1x1x6,"
        "query_scale:1x6,gallery_scale:1x1x6 "
        "--optShapes=query_desc:1x6x8,query_mask:1x6,gallery_desc:1x20x6x8,gallery_mask:1x20x6,"
        "query_scale:1x6,gallery_scale:1x20x6 "
        "--maxShapes=query_desc:1x6x8,query_mask:1x6,gallery_desc:1x20x6x8,gallery_mask:1x20x6,"
        "query_scale:1x6,gallery_scale:1x20x6 "
        "--stronglyTyped --memPoolSize=workspace:512M --skipInference"
    )
    assert not (tmp_path / "m.plan").exists()


def test_print_trtexec_plugin_flavor_names_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_toy_reranker(tmp_path / "m.onnx")
    proto = onnx.load(str(model))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "locore.flavor", "plugin"
    onnx.save(proto, str(model))
    lib = tmp_path / "liblocore_trt_plugins.so"
    lib.write_bytes(b"x")
    monkeypatch.setenv("LOCORE_TRT_PLUGIN", str(lib))
    assert main(["build", "--onnx", str(model), "--print-trtexec"]) == 0
    out = capsys.readouterr().out
    assert f"--dynamicPlugins={lib}" in out and "--saveEngine=" + str(model.with_suffix(".plan"))


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--fp16"], "weakly typed"),
        (["--memPoolSize", "gpu:1"], "--memPoolSize"),
        (["--minShapes", "query_desc:1x6"], "--minShapes"),
        (["--maxShapes", "nope:1"], "not inputs"),
        (["--builderOptimizationLevel", "9"], "0 to 5"),
    ],
)
def test_bad_flags_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], words: str
) -> None:
    model = build_toy_reranker(tmp_path / "m.onnx")
    code = main(["build", "--onnx", str(model), "--print-trtexec", *flags])
    assert code == 2
    assert words in capsys.readouterr().err


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_says_what_is_missing_and_prints_trtexec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_toy_reranker(tmp_path / "m.onnx")
    engine = tmp_path / "m.plan"
    code = main(["build", "--onnx", str(model), "--saveEngine", str(engine)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Python package 'tensorrt'" in err and "locore-edge[gpu]" in err
    assert f"trtexec --onnx={model} --saveEngine={engine} --minShapes=" in err
    assert not engine.exists() and not Path(str(engine) + ".json").exists()


def test_save_engine_required_to_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_toy_reranker(tmp_path / "m.onnx")
    assert main(["build", "--onnx", str(model)]) == 2
    assert "--saveEngine" in capsys.readouterr().err


def test_missing_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--onnx", str(tmp_path / "no.onnx"), "--print-trtexec"]) == 1
    assert "no.onnx" in capsys.readouterr().err

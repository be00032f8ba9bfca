"""A new user's first hour: the README's training recipe, export options and build output.

The recipe (README, "The demo benchmark and the shipped model") is followed in short — train on
the demo train split into the default user folder, run the demo with the result — while every
file of the installed package is hashed before and after: the shipped model stays read-only.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
from pathlib import Path

import pytest

from locore.checkpoint_format import CONFIG_FILE, shipped_model_dir
from locore.cli import main

PACKAGES = ("locore", "locore.model", "locore.export", "locore.runtime", "locore.calibration")


def package_files() -> dict[str, str]:
    """SHA-256 of every file under the installed package folders (the checkout's folders with an
    editable install) and the native sources, bytecode caches left out: Python writes those on
    import."""
    from locore.native.build import plugins_source_dir

    roots = {Path(importlib.import_module(name).__file__ or "").parent for name in PACKAGES}
    roots.add(plugins_source_dir())
    digests: dict[str, str] = {}
    for root in sorted(roots):
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh XDG data folder: where `locore train` puts models by default."""
    home = tmp_path / "data-home"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


@pytest.mark.slow
def test_training_recipe_leaves_the_package_untouched(
    demo_cache: Path, user_home: Path, tmp_path: Path, capfd
) -> None:
    """README recipe, short: `locore train --demo-split train` (default output) then
    `locore demo --model <that folder>`; the package's files are byte-identical afterwards, and
    exporting the new checkpoint prints no torchvision warning."""
    before = package_files()
    assert any(p.endswith("model.safetensors") for p in before)  # the shipped model is hashed
    code = main([
        "train", "--demo-split", "train", "--cache-dir", str(demo_cache), "--steps", "2",
        "--batch-size", "2", "--window", "8", "--threads", "1",
    ])  # fmt: skip
    out = capfd.readouterr().out
    assert code == 0, out
    trained = user_home / "locore-edge" / "models" / "tiny-demo-train"
    assert (trained / "model.safetensors").is_file() and (trained / CONFIG_FILE).is_file()
    assert f"locore demo --model {trained}" in out

    # the same command again: finished, nothing rewritten (a tuned fusion would survive)
    config_bytes = (trained / CONFIG_FILE).read_bytes()
    argv = ["train", "--demo-split", "train", "--cache-dir", str(demo_cache), "--steps", "2",
            "--batch-size", "2", "--window", "8", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    assert "already trained for 2 steps; nothing written" in capfd.readouterr().out
    assert (trained / CONFIG_FILE).read_bytes() == config_bytes

    capfd.readouterr()
    code = main([
        "demo", "--model", str(trained), "--cache-dir", str(demo_cache), "--max-queries", "3",
        "--no-ransac", "--picture", str(tmp_path / "demo.png"), "--no-progress",
    ])  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "LOCORE (" in out and "mAP" in out
    assert "torchvision" not in err, err  # the export of the new checkpoint is quiet
    exported = list((demo_cache / "models").glob("tiny-demo-train-*-portable.onnx"))
    assert len(exported) == 1

    import onnx

    from locore.export.onnx_export import DEFAULT_OPSET, default_opset

    assert default_opset(onnx.load(str(exported[0]))) == DEFAULT_OPSET
    assert package_files() == before


def test_the_shipped_model_is_read_only(tmp_path: Path, user_home: Path, capsys) -> None:
    """`--output` / `--tune-fusion` into the shipped model's folder (also through a link, or a
    new folder beside it in locore/assets) are refused before anything is read or written, with
    a user folder to use instead; the library refuses too."""
    shipped = shipped_model_dir()
    link = tmp_path / "link"
    link.symlink_to(shipped, target_is_directory=True)
    before = package_files()
    for target in (shipped, link, shipped.parent / "mine"):
        assert main(["train", "--demo-split", "train", "--output", str(target)]) == 2
        err = capsys.readouterr().err
        assert "the shipped model is read-only" in err, err
        assert str(user_home / "locore-edge" / "models") in err
        assert "Traceback" not in err
    assert main(["demo", "--tune-fusion", str(shipped), "--cache-dir", str(tmp_path)]) == 2
    assert "--tune-fusion" in (err := capsys.readouterr().err) and "read-only" in err
    assert not (shipped.parent / "mine").exists()

    from locore.errors import OutputError
    from locore.model.training import TrainConfig, train

    with pytest.raises(OutputError, match="read-only"):
        train(None, shipped, TrainConfig())  # type: ignore[arg-type]  # refused before data
    assert package_files() == before


def test_demo_split_and_files_do_not_mix(tmp_path: Path, capsys) -> None:
    f = tmp_path / "q.h5"
    f.write_bytes(b"")
    assert main(["train", "--demo-split", "train", "--query-features", str(f)]) == 2
    assert "drop --query-features" in capsys.readouterr().err
    assert main(["train", "--query-features", str(f), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "missing --db-features --shortlist --ground-truth" in err and "--demo-split" in err
    assert not (tmp_path / "o").exists()


def test_opset_17_is_refused_not_substituted(tmp_path: Path, capsys) -> None:
    """torch's exporter writes opset 18 and newer and cannot convert this model down: opset 17
    is a clear usage error (exit 2), no file, no exporter traceback."""
    from locore.export.onnx_export import exporter_min_opset

    lowest = exporter_min_opset()
    if lowest <= 17:
        pytest.skip(f"this torch's exporter writes opset {lowest}: 17 is produced for real")
    out = tmp_path / "m.onnx"
    code = main(["export", "--checkpoint", str(shipped_model_dir()), "--output", str(out),
                 "--opset", "17"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "opset 17 cannot be produced" in err and f"Use opset {lowest} to" in err
    assert "Traceback" not in err and not out.exists()


def test_a_substituted_opset_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the exporter writes another opset than asked for (torch's does, below its own
    lowest: it keeps 18 when converting down fails), the export fails and writes nothing. The
    exporter is replaced by one that returns an opset-18 model whatever it is asked."""
    import torch
    from onnx import helper

    from locore.config import LocoreConfig
    from locore.export import onnx_export as oe
    from locore.model import LocoreReranker

    class Program:
        model_proto = helper.make_model(
            helper.make_graph([], "g", [], []), opset_imports=[helper.make_opsetid("", 18)]
        )

    asked = []
    monkeypatch.setattr(oe, "exporter_min_opset", lambda: 17)
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: asked.append(k) or Program())
    model = LocoreReranker(LocoreConfig.preset("tiny", n_layers=1, d_model=32, num_desc=8))
    bad = tmp_path / "m17.onnx"
    with pytest.raises(oe.ExportError, match="asked for ONNX opset 17, but .* wrote opset 18"):
        oe.export_onnx(model, bad, opset=17)
    assert asked[0]["opset_version"] == 17 and not bad.exists()


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("cmake") is None or not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
    reason="needs cmake and a C++ compiler",
)
def test_build_plugins_lists_only_this_build(tmp_path: Path, capsys) -> None:
    """A CPU-only build in a folder that holds a CUDA archive from an earlier build lists the CPU
    library as built and the archive as a leftover, not as built."""
    build = tmp_path / "build"
    build.mkdir()
    leftover = build / "liblocore_scan_cuda.a"
    leftover.write_bytes(b"!<arch>\n")
    jobs = str(min(2, len(os.sched_getaffinity(0))))
    assert main(["build-plugins", "--no-cuda", "--build-dir", str(build), "-j", jobs]) == 0
    out = capsys.readouterr().out
    listed, _, rest = out.partition("not part of this build")
    assert "liblocore_scan_cpu" in listed and "liblocore_scan_cuda" not in listed
    assert "liblocore_scan_cuda.a" in rest

"""Package layout and the torch-free parts: `locore`, `locore.runtime`, `locore info`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import locore
from locore.cli import main
from locore.deps import MissingDependencyError, require

BLOCK_TORCH = (
    "import sys\n"
    "for name in ('torch', 'torchvision'):\n"
    "    sys.modules[name] = None  # any import of torch now raises ImportError\n"
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, timeout=120
    )


def test_locore_and_runtime_import_without_torch():
    proc = _run(
        "import locore, locore.runtime, locore.config, locore.cli\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_locore_info_runs_without_torch():
    proc = _run("from locore.cli import main\nraise SystemExit(main(['info', '--json']))\n")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert set(info["presets"]) == {"tiny", "small", "base"}
    assert info["backends"]["onnxruntime-cpu"] is True
    tensorrt = next(p for p in info["packages"] if p["module"] == "tensorrt")
    assert tensorrt["extra"] == "gpu"


def test_model_without_torch_names_the_extra():
    proc = _run("import locore.model\n")
    assert proc.returncode != 0
    assert "locore-edge[export]" in proc.stderr


def test_version_and_info_text(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert locore.__version__ in capsys.readouterr().out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "Presets:" in out and "tiny" in out and "Backends:" in out


def test_console_script_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "locore", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and locore.__version__ in proc.stdout


def test_require_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as if TensorRT were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'locore-edge\[gpu\]'"):
        require("tensorrt")


def test_no_generic_top_level_modules_installed():
    """The folders model/, runtime/, ... are installed as locore.*, never as top-level names."""
    from importlib.metadata import distribution

    dist = distribution("locore-edge")
    top = (dist.read_text("top_level.txt") or "").split()
    assert top in ([], ["locore"]), top
    import locore.runtime

    assert locore.runtime.__name__ == "locore.runtime"


def test_every_python_folder_is_packaged():
    """A non-editable install gets exactly the packages pyproject lists: none may be missing."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")

    root = Path(__file__).resolve().parent.parent
    tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = set()
    data_only = {"locore.plugins"}  # C++/CUDA sources shipped as package data, no Python
    found |= data_only & set(tool["package-dir"])
    for name, folder in tool["package-dir"].items():
        for init in (root / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(root / folder).parts
            found.add(".".join((name, *rel)))
    assert found == listed, f"missing from pyproject packages: {sorted(found - listed)}"
    for package, patterns in tool["package-data"].items():
        folder = root / tool["package-dir"][package]
        for pattern in patterns:
            assert list(folder.glob(pattern)), (package, pattern)

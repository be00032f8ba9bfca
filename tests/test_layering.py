"""Imports point one way: the runtime never needs torch, the model or the exporter, and nothing
in the runtime imports the demo benchmark (the subpackage at its edge)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import importlib, json, pkgutil, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import locore.runtime

FORBIDDEN = ("locore.model", "locore.export", "locore.runtime.demo")
names = sorted(
    m.name for m in pkgutil.walk_packages(locore.runtime.__path__, "locore.runtime.")
)
result = {"modules": names, "failed": {}, "pulled": {}}
for name in names:
    in_demo = name == "locore.runtime.demo" or name.startswith("locore.runtime.demo.")
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        result["failed"][name] = f"{type(exc).__name__}: {exc}"
        continue
    new = set(sys.modules) - before
    bad = sorted(
        m for m in new
        if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)
        and not (in_demo and m.startswith("locore.runtime.demo"))
    )
    if bad:
        result["pulled"][name] = bad
print(json.dumps(result))
"""


def _probe() -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_runtime_module_imports_without_torch_and_points_one_way():
    result = _probe()
    names = result["modules"]
    # the probe really walked the package: the stages and the demo are there
    for expected in (
        "locore.runtime.packing",
        "locore.runtime.backends.ort",
        "locore.runtime.sliding_windows",
        "locore.runtime.metrics",
        "locore.runtime.demo",
    ):
        assert expected in names, names
    assert result["failed"] == {}, result["failed"]
    assert result["pulled"] == {}, result["pulled"]


def test_the_probe_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The check can fail: a runtime-like module that imports the demo is reported."""
    pkg = tmp_path / "fake_rt"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("import locore.runtime.demo\n")
    probe = PROBE.replace("import locore.runtime\n", "import locore.runtime, fake_rt\n").replace(
        'locore.runtime.__path__, "locore.runtime."', 'fake_rt.__path__, "fake_rt."'
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "fake_rt.bad" in result["pulled"], result

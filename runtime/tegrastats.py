"""Jetson telemetry: the ``tegrastats`` line parser, a sampler thread, power-mode probes.

``tegrastats`` (Jetson Linux, ``/usr/bin/tegrastats``) prints one line per interval
(``tegrastats --interval MS``). The fields this module reads, as NVIDIA's Jetson Linux developer
guide documents them ("Tegrastats Utility": ``RAM X/Y (lfb NxZ)``, ``CPU [X%@Z,...]``,
``EMC_FREQ X%@Y``, ``GR3D_FREQ X%@[Y,...]``, ``<sensor>@<T>C``, ``<rail> Xmw/Ymw``)::

    JetPack 5 (L4T r35, AGX Orin):
    08-19-2022 10:27:48 RAM 2448/30536MB (lfb 6833x4MB) SWAP 0/15268MB (cached 0MB)
      CPU [1%@1190,0%@1190,...,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[1236,1236] VIC_FREQ 729
      APE 174 CPU@44.843C ... tj@44.843C VDD_GPU_SOC 2400mW/2400mW VDD_CPU_CV 400mW/400mW
      VIN_SYS_5V0 2926mW/2926mW VDDQ_VDD2_1V8AO 301mW/301mW
    JetPack 6 (L4T r36, Orin Nano):
    11-06-2023 10:12:15 RAM 2068/7620MB (lfb 6x4MB) SWAP 0/3810MB (cached 0MB)
      CPU [1%@729,...] GR3D_FREQ 0% cpu@46.5C soc2@45.062C gpu@45.593C tj@46.5C
      VDD_IN 4797mW/4797mW VDD_CPU_GPU_CV 481mW/481mW VDD_SOC 1440mW/1440mW

A rail reads ``<instantaneous>mW/<average since tegrastats started>mW``. Fields a board or a
release does not print (no ``EMC_FREQ`` on JetPack 6 Orin Nano, no GR3D frequency, other rail
names) are ``None`` / absent, never guessed. A CPU core printed ``off`` is powered down.

:class:`TegrastatsSampler` runs ``tegrastats --interval MS`` as a subprocess and stamps each
line with :func:`time.perf_counter` when it arrives; :func:`summarize` turns the samples of a
time span into loads, frequencies, mean power per rail and energy (the integral of the
instantaneous power over the span, piecewise linear between samples, in mJ = mW x s).
:func:`nvpmodel_mode` and :func:`jetson_clocks_state` read the power mode and whether
``jetson_clocks`` pinned the clocks, or say ``"unknown"``.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TEGRASTATS = "tegrastats"
NOT_A_JETSON = "not a Jetson (no tegrastats on PATH and no /etc/nv_tegra_release)"
# The module's input rail, when the board reports one (Orin Nano/NX on JetPack 5 and 6, Xavier).
INPUT_RAIL = "VDD_IN"
# A sensor reported at -256 C is powered down (e.g. CV0 on a board without the engine).
OFFLINE_TEMPERATURE = -256.0

_TIMESTAMP = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?")
_CPU_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[([\d,]+)\]|@(\d+))?")
_TEMP = re.compile(r"(?<![\w%@\[])([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C\b")
# "VDD_IN 4797mW/4797mW" (JetPack 5/6) and the older unit-less "POM_5V_IN 2316/2316".
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(mW)?/(\d+)(?:mW)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}


class TegrastatsError(ValueError):
    """A line is not a tegrastats line (none of the fields it always prints)."""


@dataclass
class TegrastatsSample:
    """One tegrastats line, parsed. ``None`` = the line does not report the field.

    cpu_loads: [cores] percent, ``None`` for a core printed ``off``; cpu_freqs_mhz alike.
    gpu_freqs_mhz: GR3D frequency per GPC (JetPack 5 prints ``@[f0,f1]``), ``[]`` if absent.
    rails_mw: rail -> (instantaneous mW, tegrastats' running average mW).
    time_s: :func:`time.perf_counter` when the sampler received the line (``None`` when parsed
    from text).
    """

    timestamp: str | None = None
    time_s: float | None = None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    cpu_loads: list[float | None] = field(default_factory=list)
    cpu_freqs_mhz: list[int | None] = field(default_factory=list)
    emc_load: float | None = None
    emc_freq_mhz: int | None = None
    gpu_load: float | None = None
    gpu_freqs_mhz: list[int] = field(default_factory=list)
    temps_c: dict[str, float] = field(default_factory=dict)
    rails_mw: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def cpu_load(self) -> float | None:
        """Mean load of the online cores (percent), ``None`` if no core is reported."""
        online = [x for x in self.cpu_loads if x is not None]
        return float(np.mean(online)) if online else None

    @property
    def gpu_freq_mhz(self) -> float | None:
        """Mean GR3D frequency over the GPCs, ``None`` if the line has none."""
        return float(np.mean(self.gpu_freqs_mhz)) if self.gpu_freqs_mhz else None


def parse_line(line: str, time_s: float | None = None) -> TegrastatsSample:
    """Parse one tegrastats line (JetPack 4, 5 or 6 formats; see the module docstring).

    Raises :class:`TegrastatsError` when the line has neither ``RAM`` nor ``CPU [...]`` (every
    tegrastats line starts with them).
    """
    text = line.strip()
    ram, cpu = _RAM.search(text), _CPU.search(text)
    if ram is None and cpu is None:
        raise TegrastatsError(
            f"not a tegrastats line (expected 'RAM used/totalMB ... CPU [...]'), got {text[:80]!r}"
        )
    sample = TegrastatsSample(time_s=time_s)
    stamp = _TIMESTAMP.match(text)
    if stamp:
        sample.timestamp = stamp.group(1)
    if ram:
        sample.ram_used_mb, sample.ram_total_mb = int(ram.group(1)), int(ram.group(2))
    swap = _SWAP.search(text)
    if swap:
        sample.swap_used_mb = int(swap.group(1))
    if cpu:
        shared = int(cpu.group(2)) if cpu.group(2) else None  # older "CPU [X%,Y%]@Z"
        for item in cpu.group(1).split(","):
            item = item.strip()
            core = _CPU_CORE.match(item)
            if core:
                sample.cpu_loads.append(float(core.group(1)))
                sample.cpu_freqs_mhz.append(int(core.group(2)) if core.group(2) else shared)
            elif item:  # "off" (powered down) or anything unreadable
                sample.cpu_loads.append(None)
                sample.cpu_freqs_mhz.append(None)
    emc = _EMC.search(text)
    if emc:
        sample.emc_load = float(emc.group(1))
        sample.emc_freq_mhz = int(emc.group(2)) if emc.group(2) else None
    gr3d = _GR3D.search(text)
    if gr3d:
        sample.gpu_load = float(gr3d.group(1))
        if gr3d.group(2):
            sample.gpu_freqs_mhz = [int(f) for f in gr3d.group(2).split(",") if f]
        elif gr3d.group(3):
            sample.gpu_freqs_mhz = [int(gr3d.group(3))]
    for name, value in _TEMP.findall(text):
        sample.temps_c[name] = float(value)
    for name, current, unit, average in _RAIL.findall(text):
        if name in _NOT_RAILS or (not unit and not name.startswith(("POM_", "VDD_", "VIN_"))):
            continue
        sample.rails_mw[name] = (float(current), float(average))
    return sample


def parse_lines(lines: Iterable[str]) -> list[TegrastatsSample]:
    """Every tegrastats line of ``lines`` (blank lines skipped), e.g. a ``--logfile``."""
    return [parse_line(line) for line in lines if line.strip()]


# ---- is this a Jetson, and how is it set up -----------------------------------------------------
def find_tegrastats(command: str | Path | None = None) -> str | None:
    """The tegrastats executable (``command`` if given and runnable, else ``tegrastats`` on PATH,
    else ``/usr/bin/tegrastats``), or ``None``."""
    if command is not None:
        return shutil.which(str(command))
    found = shutil.which(TEGRASTATS)
    if found:
        return found
    fallback = Path("/usr/bin/tegrastats")
    return str(fallback) if fallback.is_file() else None


def l4t_release() -> str | None:
    """The first line of ``/etc/nv_tegra_release`` (``# R36 (release), REVISION: 3.0 ...``)."""
    try:
        return Path("/etc/nv_tegra_release").read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError):
        return None


def is_jetson() -> bool:
    return find_tegrastats() is not None or l4t_release() is not None


def command_output(argv: Sequence[str], timeout: float = 5.0) -> str | None:
    """stdout of ``argv`` if it exists and exits 0 within ``timeout``, else ``None``."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def parse_nvpmodel(text: str) -> dict[str, Any] | None:
    """``nvpmodel -q`` output (``NV Power Mode: MAXN`` then the mode id) -> {name, id}."""
    match = re.search(r"NV Power Mode:\s*(\S+)(?:\s+(\d+))?", text)
    if not match:
        return None
    return {"name": match.group(1), "id": int(match.group(2)) if match.group(2) else None}


def nvpmodel_mode() -> dict[str, Any] | str:
    """The power mode from ``nvpmodel -q``, or ``"unknown"`` (no nvpmodel, or unreadable)."""
    text = command_output(["nvpmodel", "-q"])
    parsed = parse_nvpmodel(text) if text else None
    return parsed if parsed is not None else "unknown"


def parse_jetson_clocks(text: str) -> str:
    """``jetson_clocks --show`` output -> ``"on"``, ``"off"`` or ``"unknown"``.

    ``jetson_clocks`` pins every CPU core and the GPU at their maximum: ``on`` when each
    ``cpuN:`` line and the ``GPU`` line show ``MinFreq == MaxFreq``, ``off`` when any shows
    ``MinFreq < MaxFreq``, ``unknown`` when the output has no such line.
    """
    pinned: list[bool] = []
    for line in text.splitlines():
        if not re.match(r"\s*(cpu\d+:|GPU\b)", line):
            continue
        low = re.search(r"MinFreq=(\d+)", line)
        high = re.search(r"MaxFreq=(\d+)", line)
        if low and high:
            pinned.append(int(low.group(1)) == int(high.group(1)))
    if not pinned:
        return "unknown"
    return "on" if all(pinned) else "off"


def jetson_clocks_state() -> str:
    """``"on"``/``"off"`` from ``jetson_clocks --show`` when readable (it usually needs root),
    else ``"unknown"``."""
    text = command_output(["jetson_clocks", "--show"])
    return parse_jetson_clocks(text) if text else "unknown"


# ---- the sampler ---------------------------------------------------------------------------------
class TegrastatsSampler:
    """``tegrastats --interval MS`` in a subprocess; every line parsed and time-stamped.

    >>> with TegrastatsSampler(interval_ms=100) as sampler:
    ...     t0 = time.perf_counter(); work(); t1 = time.perf_counter()
    >>> summary = summarize(sampler.samples, t0, t1)

    ``command``: the tegrastats executable (default: found on PATH). Raises FileNotFoundError
    in :meth:`start` when there is none. Lines that do not parse are logged and skipped.
    """

    def __init__(self, interval_ms: int = 100, command: str | Path | None = None) -> None:
        if interval_ms < 1:
            raise ValueError(f"the tegrastats interval must be >= 1 ms, got {interval_ms}")
        self.interval_ms = int(interval_ms)
        self.command = command
        self.samples: list[TegrastatsSample] = []
        self.skipped = 0
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        exe = find_tegrastats(self.command)
        if exe is None:
            raise FileNotFoundError(
                f"tegrastats not found ({self.command or 'on PATH'}); telemetry needs a Jetson"
            )
        self._proc = subprocess.Popen(
            [exe, "--interval", str(self.interval_ms)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            stamp = time.perf_counter()
            if not line.strip():
                continue
            try:
                sample = parse_line(line, stamp)
            except TegrastatsError as exc:
                self.skipped += 1
                log.debug("%s", exc)
                continue
            with self._lock:
                self.samples.append(sample)

    def wait_for_samples(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until ``count`` samples arrived (True) or ``timeout`` seconds passed."""
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            with self._lock:
                if len(self.samples) >= count:
                    return True
            if self._proc is not None and self._proc.poll() is not None:
                break
            time.sleep(0.01)
        with self._lock:
            return len(self.samples) >= count

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=3)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None

    def __enter__(self) -> TegrastatsSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- summaries -----------------------------------------------------------------------------------
def energy_mj(times_s: Sequence[float], power_mw: Sequence[float], t0: float, t1: float) -> float:
    """The integral of power over ``[t0, t1]`` in mJ (mW x s).

    Power is taken as piecewise linear between the samples ``(times_s[i], power_mw[i])`` and
    constant before the first and after the last sample. Needs at least one sample.
    """
    t = np.asarray(times_s, dtype=np.float64)
    p = np.asarray(power_mw, dtype=np.float64)
    if t.size == 0 or t.shape != p.shape:
        raise ValueError(
            f"need matching non-empty times and powers, got {t.shape} and {p.shape} samples"
        )
    if t1 < t0:
        raise ValueError(f"the span must not end ({t1}) before it starts ({t0})")
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    grid = np.concatenate([[t0], t[(t > t0) & (t < t1)], [t1]])
    values = np.interp(grid, t, p)
    return float(np.sum((values[1:] + values[:-1]) * np.diff(grid)) / 2.0)


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max())}


def summarize(
    samples: Sequence[TegrastatsSample],
    t0: float,
    t1: float,
    *,
    windows: int | None = None,
    queries: int | None = None,
    margin_s: float = 0.0,
) -> dict[str, Any]:
    """Loads, frequencies, power and energy over ``[t0, t1]`` (perf_counter seconds).

    Statistics use the samples stamped within ``[t0 - margin_s, t1 + margin_s]``; energy
    integrates each rail's instantaneous power over ``[t0, t1]`` (:func:`energy_mj`), divided
    by ``windows`` / ``queries`` when given. Every field a board does not report is ``None``
    (rails: absent).
    """
    inside = [
        s for s in samples if s.time_s is not None and t0 - margin_s <= s.time_s <= t1 + margin_s
    ]
    timed = [s for s in samples if s.time_s is not None]
    rails: dict[str, dict[str, float | None]] = {}
    names = sorted({name for s in timed for name in s.rails_mw})
    for name in names:
        points = [(s.time_s, s.rails_mw[name][0]) for s in timed if name in s.rails_mw]
        near = [s.rails_mw[name][0] for s in inside if name in s.rails_mw]
        energy = energy_mj([p[0] for p in points], [p[1] for p in points], t0, t1)  # type: ignore[misc]
        rails[name] = {
            "mean_mw": float(np.mean(near)) if near else None,
            "max_mw": float(np.max(near)) if near else None,
            "energy_mj": energy,
            "energy_per_window_mj": energy / windows if windows else None,
            "energy_per_query_mj": energy / queries if queries else None,
        }
    temps: dict[str, float] = {}
    for s in inside:
        for name, value in s.temps_c.items():
            if value > OFFLINE_TEMPERATURE:
                temps[name] = max(temps.get(name, value), value)
    gpu_freqs = [f for s in inside if (f := s.gpu_freq_mhz) is not None]
    return {
        "available": True,
        "samples": len(inside),
        "duration_s": t1 - t0,
        "gpu_load_pct": _stats([s.gpu_load for s in inside if s.gpu_load is not None]),
        "gpu_freq_mhz": _stats(gpu_freqs),
        "emc_load_pct": _stats([s.emc_load for s in inside if s.emc_load is not None]),
        "emc_freq_mhz": _stats(
            [float(s.emc_freq_mhz) for s in inside if s.emc_freq_mhz is not None]
        ),
        "cpu_load_pct": _stats([c for s in inside if (c := s.cpu_load) is not None]),
        "ram_used_mb": _stats([float(s.ram_used_mb) for s in inside if s.ram_used_mb is not None]),
        "max_temp_c": temps,
        "rails": rails,
        "input_rail": INPUT_RAIL if INPUT_RAIL in rails else None,
    }


def unavailable(reason: str = NOT_A_JETSON) -> dict[str, Any]:
    """The telemetry section of a run without tegrastats: says why, reports nothing else."""
    return {"available": False, "reason": reason}

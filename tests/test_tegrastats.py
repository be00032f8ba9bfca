"""tegrastats parsing (JetPack 5 and 6 line formats), energy integration, power-mode probes and
the sampler thread against a fake tegrastats. Expected values are read off the fixture lines by
hand (tests/data/tegrastats/README.md says where the formats come from)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from locore.runtime import tegrastats as ts

DATA = Path(__file__).parent / "data" / "tegrastats"


def _lines(name: str) -> list[str]:
    return [line for line in (DATA / name).read_text().splitlines() if line.strip()]


def test_jetpack5_agx_orin_line():
    s = ts.parse_line(_lines("jetpack5_agx_orin.txt")[0])
    assert s.timestamp == "08-19-2022 10:27:48"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (2448, 30536, 0)
    assert s.cpu_loads == [1.0] + [0.0] * 7 + [None] * 4  # 4 cores "off"
    assert s.cpu_freqs_mhz == [1190] * 8 + [None] * 4
    assert s.cpu_load == pytest.approx(1 / 8)  # mean over the online cores only
    assert (s.emc_load, s.emc_freq_mhz) == (0.0, 2133)
    assert (s.gpu_load, s.gpu_freqs_mhz, s.gpu_freq_mhz) == (0.0, [1236, 1236], 1236.0)
    assert s.temps_c["CPU"] == 44.843 and s.temps_c["tj"] == 44.843
    assert s.temps_c["CV0"] == -256.0 and s.temps_c["Tboard"] == 33.0
    assert s.rails_mw == {
        "VDD_GPU_SOC": (2400.0, 2400.0),
        "VDD_CPU_CV": (400.0, 400.0),
        "VIN_SYS_5V0": (2926.0, 2926.0),
        "NC": (0.0, 0.0),
        "VDDQ_VDD2_1V8AO": (301.0, 301.0),
    }
    busy = ts.parse_line(_lines("jetpack5_agx_orin.txt")[1])
    assert busy.gpu_load == 87.0 and busy.gpu_freqs_mhz == [1300, 1300]
    assert busy.rails_mw["VDD_GPU_SOC"] == (9600.0, 6000.0)  # instantaneous / average
    assert (busy.emc_load, busy.emc_freq_mhz) == (12.0, 3199)


def test_jetpack6_orin_nano_line_has_no_emc_and_no_gpu_frequency():
    idle, busy = (ts.parse_line(line) for line in _lines("jetpack6_orin_nano.txt"))
    assert idle.emc_load is None and idle.emc_freq_mhz is None
    assert idle.gpu_load == 0.0 and idle.gpu_freqs_mhz == [] and idle.gpu_freq_mhz is None
    assert idle.cpu_freqs_mhz == [729] * 6
    assert idle.temps_c == {
        "cpu": 46.5,
        "soc2": 45.062,
        "soc0": 45.656,
        "gpu": 45.593,
        "tj": 46.5,
        "soc1": 44.843,
    }
    assert idle.rails_mw == {
        "VDD_IN": (4797.0, 4797.0),
        "VDD_CPU_GPU_CV": (481.0, 481.0),
        "VDD_SOC": (1440.0, 1440.0),
    }
    assert busy.cpu_loads == [42.0, 18.0, 9.0, 5.0, None, None]
    assert busy.cpu_load == pytest.approx((42 + 18 + 9 + 5) / 4)
    assert busy.gpu_load == 64.0
    assert busy.rails_mw["VDD_IN"] == (7357.0, 6077.0)


def test_jetpack6_agx_orin_engines_off_are_neither_rails_nor_temperatures():
    (s,) = (ts.parse_line(line) for line in _lines("jetpack6_agx_orin.txt"))
    assert set(s.rails_mw) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"}
    assert s.rails_mw["VDD_GPU_SOC"] == (14414.0, 14414.0)
    assert set(s.temps_c) == {"cpu", "soc2", "soc0", "gpu", "tj", "soc1"}
    assert s.gpu_freqs_mhz == [1300, 1300] and s.gpu_load == 99.0
    assert len(s.cpu_loads) == 12 and s.ram_total_mb == 62841


def test_missing_rails():
    first, second = ts.parse_lines(_lines("missing_rails.txt"))
    assert first.rails_mw == {"VDD_IN": (5100.0, 5100.0)}
    assert second.rails_mw == {}
    assert second.cpu_loads == [10.0] + [None] * 5


def test_older_formats_and_garbage():
    # JetPack 4 (Nano): shared CPU frequency, rails without units
    s = ts.parse_line(
        "RAM 1708/3964MB (lfb 94x4MB) SWAP 0/1982MB (cached 0MB) CPU [9%,4%,off,off]@1479 "
        "EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 PLL@36C CPU@38.5C POM_5V_IN 2316/2316 "
        "POM_5V_GPU 0/0 POM_5V_CPU 398/398"
    )
    assert s.cpu_loads == [9.0, 4.0, None, None] and s.cpu_freqs_mhz == [1479, 1479, None, None]
    assert s.gpu_freqs_mhz == [921]
    assert s.rails_mw == {
        "POM_5V_IN": (2316.0, 2316.0),
        "POM_5V_GPU": (0.0, 0.0),
        "POM_5V_CPU": (398.0, 398.0),
    }
    assert "RAM" not in s.rails_mw and "SWAP" not in s.rails_mw
    with pytest.raises(ts.TegrastatsError, match="not a tegrastats line"):
        ts.parse_line("Segmentation fault (core dumped)")


def test_energy_is_the_integral_of_power():
    # constant 1000 mW for 2 s = 2000 mJ; a ramp 0 -> 1000 mW over 1 s = 500 mJ
    assert ts.energy_mj([0.0, 1.0, 2.0], [1000.0] * 3, 0.0, 2.0) == pytest.approx(2000.0)
    assert ts.energy_mj([0.0, 1.0], [0.0, 1000.0], 0.0, 1.0) == pytest.approx(500.0)
    # samples at 0.5 s (1000 mW) and 1.5 s (3000 mW), span [0, 2]: held flat outside them:
    # 0.5 * 1000 + (1000 + 3000) / 2 * 1.0 + 0.5 * 3000 = 4000 mJ
    assert ts.energy_mj([1.5, 0.5], [3000.0, 1000.0], 0.0, 2.0) == pytest.approx(4000.0)
    # a span inside one segment: the line from (0, 0) to (4, 4000) between 1 and 3 s
    assert ts.energy_mj([0.0, 4.0], [0.0, 4000.0], 1.0, 3.0) == pytest.approx(4000.0)
    with pytest.raises(ValueError):
        ts.energy_mj([], [], 0.0, 1.0)


def test_summarize_loads_power_energy_and_missing_rails():
    nano = [
        ts.parse_line(line, t)
        for line, t in zip(_lines("jetpack6_orin_nano.txt"), (0, 1), strict=True)
    ]
    summary = ts.summarize(nano, 0.0, 1.0, windows=4, queries=2)
    assert summary["available"] and summary["samples"] == 2
    assert summary["gpu_load_pct"] == {"mean": 32.0, "min": 0.0, "max": 64.0}
    assert summary["gpu_freq_mhz"] is None  # JetPack 6 Orin Nano prints no GR3D frequency
    assert summary["emc_freq_mhz"] is None
    vin = summary["rails"]["VDD_IN"]
    assert vin["mean_mw"] == pytest.approx((4797 + 7357) / 2)
    assert vin["energy_mj"] == pytest.approx((4797 + 7357) / 2 * 1.0)
    assert vin["energy_per_window_mj"] == pytest.approx(vin["energy_mj"] / 4)
    assert vin["energy_per_query_mj"] == pytest.approx(vin["energy_mj"] / 2)
    assert summary["input_rail"] == "VDD_IN"
    assert summary["max_temp_c"]["tj"] == 47.25

    gone = [
        ts.parse_line(line, t)
        for line, t in zip(_lines("missing_rails.txt"), (0.0, 0.5), strict=True)
    ]
    summary = ts.summarize(gone, 0.0, 2.0, windows=10)
    assert set(summary["rails"]) == {"VDD_IN"}
    # one sample: held flat over the 2 s span
    assert summary["rails"]["VDD_IN"]["energy_mj"] == pytest.approx(5100 * 2.0)
    agx = [ts.parse_line(_lines("jetpack5_agx_orin.txt")[0], 0.0)]
    summary = ts.summarize(agx, 0.0, 1.0)
    assert summary["input_rail"] is None  # AGX Orin reports no VDD_IN: nothing is summed up
    assert "CV0" not in summary["max_temp_c"]  # -256 C: sensor off
    assert summary["rails"]["VDD_GPU_SOC"]["energy_per_window_mj"] is None


def test_nvpmodel_and_jetson_clocks_parsers():
    assert ts.parse_nvpmodel((DATA / "nvpmodel_q.txt").read_text()) == {"name": "15W", "id": 0}
    assert ts.parse_nvpmodel("nvpmodel: command not found") is None
    assert ts.parse_jetson_clocks((DATA / "jetson_clocks_on.txt").read_text()) == "on"
    assert ts.parse_jetson_clocks((DATA / "jetson_clocks_off.txt").read_text()) == "off"
    assert ts.parse_jetson_clocks("") == "unknown"
    assert ts.parse_jetson_clocks("Error: Run jetson_clocks as root") == "unknown"


def test_probes_say_unknown_without_the_tools(monkeypatch):
    monkeypatch.setattr(ts, "command_output", lambda argv, timeout=5.0: None)
    assert ts.nvpmodel_mode() == "unknown"
    assert ts.jetson_clocks_state() == "unknown"


def fake_tegrastats(folder: Path, fixture: str) -> Path:
    """An executable that prints the fixture's lines every --interval ms, like tegrastats."""
    script = folder / "tegrastats"
    script.write_text(
        "#!/bin/sh\n"
        'interval=1000\nwhile [ $# -gt 0 ]; do [ "$1" = "--interval" ] && interval=$2; shift; '
        "done\n"
        f'while true; do while IFS= read -r line; do echo "$line"; '
        f'sleep $(awk "BEGIN {{print $interval / 1000}}"); done < "{DATA / fixture}"; done\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


@pytest.mark.skipif(os.name != "posix", reason="the fake tegrastats is a shell script")
def test_sampler_runs_tegrastats_and_stops_it(tmp_path):
    exe = fake_tegrastats(tmp_path, "jetpack6_orin_nano.txt")
    with ts.TegrastatsSampler(interval_ms=20, command=exe) as sampler:
        assert sampler.wait_for_samples(3, timeout=10)
        proc = sampler._proc
    assert proc is not None and proc.poll() is not None  # stopped
    count = len(sampler.samples)
    time.sleep(0.1)
    assert len(sampler.samples) == count  # nothing read after stop
    stamps = [s.time_s for s in sampler.samples]
    assert stamps == sorted(stamps)
    assert {s.rails_mw["VDD_IN"][0] for s in sampler.samples} <= {4797.0, 7357.0}
    with pytest.raises(FileNotFoundError, match="tegrastats not found"):
        ts.TegrastatsSampler(command=tmp_path / "missing").start()

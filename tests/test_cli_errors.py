"""Hostile inputs at the command line, and the outputs promise (issue 9, CLI half).

Every known error is one line and an exit code (2 usage, 1 run time, 130/143 interrupted), never
a traceback; outputs are checked before the work, written atomically and committed as a set, so
concurrent runs, a full disk, an interrupt or a SIGKILL never leave a mix or a half file.
Expected values come from the inputs themselves (each run's shortlist carries its run id).
"""

from __future__ import annotations

import errno
import glob
import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx_toy import build_toy_reranker, random_rows, toy_config

import locore.cli as cli
from locore.cli import describe_error, main
from locore.errors import OutputError, UsageError
from locore.fileio import (
    atomic_outputs,
    atomic_path,
    check_outputs,
    locked_folder,
    remove_stale_temps,
)
from locore.runtime.ames import write_features
from locore.runtime.local_features import LocalFeatures
from locore.runtime.shortlist import write_shortlist

CONFIG = toy_config()
NQ, NDB, K, TOPK = 3, 40, 25, 20
WINDOW_ARGS = ["--topk", str(TOPK), "--window", "8", "--stride", "3", "--quiet"]
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


# ---- fixtures ---------------------------------------------------------------------------------
def _shortlist(run: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A [NQ, K] shortlist that names its run: the 5 positions past the top 20 (kept as they
    are, scores = their sims) hold database ids 5*run .. 5*run+4 and sims 0.2 + run/100 - j/1000."""
    head = np.stack([20 + rng.permutation(20) for _ in range(NQ)])
    tail = np.tile(5 * run + np.arange(5), (NQ, 1))
    ids = np.concatenate([head, tail], axis=1)
    head_sims = np.sort(rng.uniform(0.5, 1.0, (NQ, TOPK)), axis=1)[:, ::-1]
    tail_sims = np.tile(0.2 + run / 100 - np.arange(5) / 1000, (NQ, 1))
    return np.concatenate([head_sims, tail_sims], axis=1), ids


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(9)
    write_features(tmp_path / "q.h5", LocalFeatures(**random_rows(rng, NQ, 10, CONFIG)))
    write_features(tmp_path / "db.h5", LocalFeatures(**random_rows(rng, NDB, 10, CONFIG)))
    for run in range(4):
        write_shortlist(tmp_path / f"nn{run}.npy", *_shortlist(run, rng))
    build_toy_reranker(tmp_path / "toy.onnx", CONFIG)
    return {
        "q": tmp_path / "q.h5",
        "db": tmp_path / "db.h5",
        "nn": tmp_path / "nn0.npy",
        "model": tmp_path / "toy.onnx",
        "dir": tmp_path,
    }


def rerank_argv(data: dict[str, Path], output: Path | str, *extra: str, run: int = 0) -> list[str]:
    return [
        "rerank",
        "--query-features", str(data["q"]), "--db-features", str(data["db"]),
        "--shortlist", str(data["dir"] / f"nn{run}.npy"), "--model", str(data["model"]),
        "--output", str(output), *WINDOW_ARGS, *extra,
    ]  # fmt: skip


def run_id(ranks: np.ndarray, scores: np.ndarray) -> tuple[int, int]:
    """(run named by the ranks, run named by the scores) of one re-ranking output."""
    by_ranks = int(ranks[0, TOPK]) // 5
    by_scores = int(round((float(scores[0, TOPK]) - 0.2) * 100))
    return by_ranks, by_scores


def temps_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _mount_tmpfs(path: Path, options: str) -> bool:
    if not ROOT:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write in: chmod 555, or (root ignores modes) a read-only tmpfs."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if ROOT:
        if not _mount_tmpfs(folder, "ro,size=64k"):
            pytest.skip("running as root without permission to mount a read-only tmpfs")
        yield folder
        _umount(folder)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB file system (tmpfs; needs root)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    if not _mount_tmpfs(folder, "size=64k"):
        pytest.skip("a real full disk needs a tmpfs mount (root); RLIMIT_FSIZE is tested instead")
    yield folder
    _umount(folder)


def exit_code(argv: list[str]) -> int:
    """``main(argv)``'s exit code, argparse's SystemExit included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def no_traceback(err: str) -> None:
    assert "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.startswith("locore")]) == 1, err


# ---- one error path: each class of error -> one line and its exit code ------------------------
@pytest.fixture
def fake_command(monkeypatch: pytest.MonkeyPatch):
    """``fake_command(exc)``: a ``locore fake`` command whose run raises ``exc``."""

    def make(exc: BaseException) -> None:
        module = types.ModuleType("locore_fake_command")
        module.add_arguments = lambda parser: None  # type: ignore[attr-defined]

        def run(args: object) -> int:
            raise exc

        module.run = run  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "locore_fake_command", module)
        monkeypatch.setitem(cli.COMMANDS, "fake", ("locore_fake_command", "a test command"))

    return make


def oserr(cls: type[OSError], code: int, filename: str) -> OSError:
    """What the system raises: ``cls(errno, strerror, filename)``."""
    return cls(code, os.strerror(code), filename)


def _ort_error(name: str, text: str) -> BaseException:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return getattr(ort_state, name)(text)  # type: ignore[no-any-return]


def _cv2_error() -> BaseException:
    import cv2

    try:
        cv2.resize(np.zeros((0, 0), np.uint8), (0, 0))
    except cv2.error as exc:
        return exc
    raise AssertionError("cv2 did not fail")  # pragma: no cover


def _h5py_error(tmp: Path) -> BaseException:
    import h5py

    path = tmp / "not.h5"
    path.write_bytes(b"not an HDF5 file at all")
    try:
        h5py.File(path, "r")
    except OSError as exc:
        return exc
    raise AssertionError("h5py opened a text file")  # pragma: no cover


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda t: UsageError("--window must be >= 1"), 2, ["error: --window must be >= 1"]),
        (lambda t: OutputError("--output x is a folder"), 2, ["--output x is a folder"]),
        (lambda t: ValueError("features must be float32"), 1, ["features must be float32"]),
        (lambda t: oserr(FileNotFoundError, errno.ENOENT, "/x/q.h5"), 1,
         ["/x/q.h5: no such file"]),
        (lambda t: oserr(PermissionError, errno.EACCES, "/x/q.h5"), 1,
         ["/x/q.h5: permission denied"]),
        (lambda t: oserr(IsADirectoryError, errno.EISDIR, "/x"), 1, ["/x: is a folder"]),
        (lambda t: oserr(OSError, errno.ENOSPC, "/x/s.npy"), 1,
         ["/x/s.npy", "disk full"]),
        (lambda t: oserr(OSError, errno.EFBIG, "/x/s.npy"), 1, ["file-size limit"]),
        (lambda t: oserr(OSError, errno.EROFS, "/x/s.npy"), 1, ["read-only"]),
        (_h5py_error, 1, ["HDF5: Unable to synchronously open file (file signature not found)"]),
        (lambda t: MemoryError("Unable to allocate 9.1 TiB"), 1, ["out of memory", "9.1 TiB"]),
        (lambda t: ModuleNotFoundError("No module named 'torch'"), 1, ["torch", "locore info"]),
        (lambda t: RuntimeError("engine built for sm_87"), 1, ["engine built for sm_87"]),
        (lambda t: NotImplementedError("TensorRT backend"), 1, ["not implemented: TensorRT"]),
        (lambda t: _ort_error("InvalidArgument", "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : "
                              "Got invalid dimensions for input: query_desc"), 1,
         ["ONNX Runtime: Got invalid dimensions for input: query_desc"]),
        (lambda t: _ort_error("InvalidProtobuf", "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : "
                              "Load model failed"), 1, ["ONNX Runtime: Load model failed"]),
        (lambda t: _cv2_error(), 1, ["OpenCV"]),
        (lambda t: KeyboardInterrupt(), 130, ["interrupted"]),
        (lambda t: cli.Terminated(), 143, ["terminated"]),
    ],
)  # fmt: skip
def test_known_errors_are_one_line(
    make, code: int, words: list[str], fake_command, tmp_path: Path, capsys
) -> None:
    fake_command(make(tmp_path))
    assert main(["fake"]) == code
    err = capsys.readouterr().err
    no_traceback(err)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("locore fake: ")
    for word in words:
        assert word in err, err
    assert "OSError(" not in err and "Errno" not in err  # never a bare repr


def test_closed_stdout_is_quiet(fake_command, capsys) -> None:
    fake_command(BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE)))
    assert main(["fake"]) == 141
    assert capsys.readouterr().err == ""


def test_unknown_error_is_a_bug_with_traceback(fake_command, capsys) -> None:
    fake_command(KeyError("oops"))
    assert main(["fake"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "This is a bug" in err and "KeyError" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(where: str, fake_command) -> None:
    fake_command(ValueError("bad value"))
    argv = ["--debug", "fake"] if where == "before" else ["fake", "--debug"]
    with pytest.raises(ValueError, match="bad value"):
        main(argv)


def test_describe_error_reads_no_repr() -> None:
    code, text = describe_error(OSError(errno.ENOSPC, "--output x: no space left (disk full)"))
    assert code == 1 and text == "error: --output x: no space left (disk full)"
    assert describe_error(AssertionError("x")) is None  # an assert is a bug, not input
    assert describe_error(KeyError("x")) is None


# ---- outputs checked before the work ----------------------------------------------------------
def test_output_equal_to_the_shortlist_is_refused(data: dict[str, Path], capsys) -> None:
    before = data["nn"].read_bytes()
    assert main(rerank_argv(data, data["nn"])) == 2
    err = capsys.readouterr().err
    no_traceback(err)
    assert "--output is the same file as the input --shortlist" in err
    assert data["nn"].read_bytes() == before


def test_output_equal_to_an_input_through_a_link_is_refused(data: dict[str, Path], capsys) -> None:
    link = data["dir"] / "alias.npy"
    os.link(data["nn"], link)  # a hard link: another name, the same file
    assert main(rerank_argv(data, link)) == 2
    assert "same file as the input --shortlist" in capsys.readouterr().err


def test_output_equal_to_scores_output_is_refused(data: dict[str, Path], capsys) -> None:
    out = data["dir"] / "out.npy"
    assert main(rerank_argv(data, out, "--scores-output", str(out))) == 2
    err = capsys.readouterr().err
    assert "--output and --scores-output are the same file" in err
    assert not out.exists()


@pytest.mark.parametrize("case", ["folder", "under-a-file", "suffix", "device"])
def test_unusable_output_paths(case: str, data: dict[str, Path], capsys) -> None:
    (data["dir"] / "a-folder.npy").mkdir()
    out = {
        "folder": data["dir"] / "a-folder.npy",
        "under-a-file": data["nn"] / "ranks.npy",
        "suffix": data["dir"] / "ranks.txt",
        "device": data["dir"] / "null.npy",
    }[case]
    (data["dir"] / "null.npy").symlink_to(os.devnull)
    assert main(rerank_argv(data, out)) == 2
    err = capsys.readouterr().err
    no_traceback(err)
    words = {
        "folder": "is a folder",
        "under-a-file": "is a file",
        "suffix": "must be a .npy",
        "device": "is not a regular file",
    }
    assert words[case] in err
    assert Path(os.devnull).exists() and not Path(os.devnull).is_file()


def test_readonly_output_folder_fails_before_the_work(
    data: dict[str, Path], readonly_dir: Path, capsys
) -> None:
    began = time.perf_counter()
    assert main(rerank_argv(data, readonly_dir / "ranks.npy")) == 2
    assert time.perf_counter() - began < 5
    err = capsys.readouterr().err
    no_traceback(err)
    assert f"cannot write in {readonly_dir}" in err


def test_export_to_a_readonly_folder_fails_in_a_second(readonly_dir: Path, capsys) -> None:
    from locore.checkpoint_format import shipped_model_dir

    began = time.perf_counter()
    code = main(
        [
            "export",
            "--checkpoint",
            str(shipped_model_dir()),
            "--output",
            str(readonly_dir / "m.onnx"),
        ]
    )
    assert code == 2 and time.perf_counter() - began < 1.0
    assert "cannot write in" in capsys.readouterr().err


def test_missing_and_damaged_inputs(data: dict[str, Path], capsys) -> None:
    out = data["dir"] / "ranks.npy"
    argv = rerank_argv(data, out)
    missing = [a if a != str(data["q"]) else str(data["dir"] / "nope.h5") for a in argv]
    assert main(missing) == 1
    err = capsys.readouterr().err
    no_traceback(err)
    assert "--query-features" in err and "nope.h5" in err and "no such file" in err

    text = data["dir"] / "text.h5"
    text.write_text("hello, not HDF5\n")
    truncated = data["dir"] / "truncated.h5"
    truncated.write_bytes(data["db"].read_bytes()[:3000])
    for bad in (text, truncated):
        assert main([a if a != str(data["db"]) else str(bad) for a in argv]) == 1
        err = capsys.readouterr().err
        no_traceback(err)
        assert bad.name in err
    garbage = data["dir"] / "garbage.onnx"
    garbage.write_bytes(os.urandom(300))
    assert main([a if a != str(data["model"]) else str(garbage) for a in argv]) == 1
    no_traceback(capsys.readouterr().err)
    assert not out.exists() and not temps_in(data["dir"])


@pytest.mark.skipif(ROOT, reason="root reads files whatever their mode")
def test_unreadable_input(data: dict[str, Path], capsys) -> None:
    data["db"].chmod(0)
    try:
        assert main(rerank_argv(data, data["dir"] / "ranks.npy")) == 1
    finally:
        data["db"].chmod(0o644)
    err = capsys.readouterr().err
    no_traceback(err)
    assert "db.h5" in err and "permission denied" in err.lower()


# ---- integer and float flags ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--threads", "0"], "argument --threads: must be >= 1, got 0"),
        (["--threads", "-3"], "argument --threads: must be >= 1, got -3"),
        (["--threads", "two"], "argument --threads: expected an integer"),
        (["--window", "0"], "argument --window: must be >= 1"),
        (["--topk", "-1"], "argument --topk: must be >= 1"),
        (["--alpha", "nan"], "argument --alpha: must be a finite number"),
        (["--temperature", "inf"], "argument --temperature: must be a finite number"),
        (["--alpha", "1.5"], "alpha must be in [0, 1]"),
        (["--window", "4", "--stride", "5"], "stride (5) must not exceed the window (4)"),
    ],
)
def test_rerank_flag_values(flags: list[str], words: str, data: dict[str, Path], capsys) -> None:
    assert exit_code(rerank_argv(data, data["dir"] / "r.npy", *flags)) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not (data["dir"] / "r.npy").exists()


def test_threads_beyond_the_machine_are_clamped(data: dict[str, Path], capsys) -> None:
    out = data["dir"] / "ranks.npy"
    began = time.perf_counter()
    assert main(rerank_argv(data, out, "--threads", "2000")) == 0
    assert time.perf_counter() - began < 30
    err = capsys.readouterr().err
    cores = len(os.sched_getaffinity(0))
    assert f"--threads 2000 is more than the {cores} CPU cores" in err and f"using {cores}" in err
    assert np.load(out).shape == (NQ, K)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--steps", "0"], "argument --steps: must be >= 1, got 0"),
        (["--batch-size", "-2"], "argument --batch-size: must be >= 1"),
        (["--lr", "nan"], "argument --lr: must be a finite number"),
        (["--lr", "-0.1"], "--lr must be > 0"),
        (["--seed", "-1"], "argument --seed: must be >= 0"),
        (["--set", "bogus=1"], "--set bogus=1: unknown config key"),
        (["--set", "num_scales"], "must be KEY=VALUE"),
        (["--set", "num_scales=eight"], "num_scales must be an integer, got 'eight'"),
        (["--set", "n_heads=3"], "must be divisible by n_heads (3)"),
        (["--set", "desc_dim=64"], "desc_dim cannot be set here"),
        (["--threads", "0"], "argument --threads: must be >= 1"),
    ],
)
def test_train_flag_values(flags: list[str], words: str, data: dict[str, Path], capsys) -> None:
    gnd = data["dir"] / "gnd.pkl"
    gnd.write_bytes(b"")
    argv = ["train", "--query-features", str(data["q"]), "--db-features", str(data["db"]),
            "--shortlist", str(data["nn"]), "--ground-truth", str(gnd),
            "--output", str(data["dir"] / "ckpt"), *flags]  # fmt: skip
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not (data["dir"] / "ckpt").exists()


def test_train_output_checks(data: dict[str, Path], capsys) -> None:
    gnd = data["dir"] / "gnd.pkl"
    gnd.write_bytes(b"")
    base = ["train", "--query-features", str(data["q"]), "--db-features", str(data["db"]),
            "--shortlist", str(data["nn"]), "--ground-truth", str(gnd)]  # fmt: skip
    assert main([*base, "--output", str(data["q"])]) == 2
    assert f"--output {data['q']} is a file; give a folder" in capsys.readouterr().err
    assert main([*base, "--output", str(data["q"] / "ck")]) == 2
    assert "is a file, so no folder can be made there" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--opset", "0"], "argument --opset: must be >= 1, got 0"),
        (["--max-gallery", "-5"], "argument --max-gallery: must be >= 1, got -5"),
        (["--max-gallery", "0"], "argument --max-gallery: must be >= 1, got 0"),
    ],
)
def test_export_flag_values(flags: list[str], words: str, tmp_path: Path, capsys) -> None:
    from locore.checkpoint_format import shipped_model_dir

    argv = ["export", "--checkpoint", str(shipped_model_dir()), "--output",
            str(tmp_path / "m.onnx"), *flags]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert words in capsys.readouterr().err


def test_export_checkpoint_problems_fail_before_torch(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "m.onnx")
    began = time.perf_counter()
    assert main(["export", "--checkpoint", str(tmp_path / "none"), "--output", out]) == 1
    assert "--checkpoint" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", "--checkpoint", str(tmp_path / "empty"), "--output", out]) == 1
    err = capsys.readouterr().err
    no_traceback(err)
    assert "config.json" in err
    assert time.perf_counter() - began < 1.0


def test_demo_and_build_plugins_flags(tmp_path: Path, readonly_dir: Path, capsys) -> None:
    for argv, words in [
        (["demo", "--threads", "0"], "argument --threads: must be >= 1"),
        (["demo", "--shortlist", "0"], "argument --shortlist: must be >= 1"),
        (["demo", "--max-queries", "-1"], "argument --max-queries: must be >= 1"),
        (["build-plugins", "--jobs", "0"], "must be >= 1, got 0"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and words in capsys.readouterr().err
    cache = str(tmp_path / "cache")
    picture = tmp_path / "same.png"
    for argv, words in [
        (["demo", "--cache-dir", cache, "--picture", str(picture), "--json", str(picture)],
         "--picture and --json are the same file"),
        (["demo", "--cache-dir", cache, "--picture", str(readonly_dir / "p.png")],
         "cannot write in"),
        (["demo", "--cache-dir", str(readonly_dir / "c")], "--cache-dir"),
        (["build-plugins", "--build-dir", str(picture.parent / "file")], "is a file"),
    ]:  # fmt: skip
        (picture.parent / "file").write_text("x")
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        no_traceback(err)
        assert words in err, err
    assert not (tmp_path / "cache").exists()


# ---- atomic output sets -----------------------------------------------------------------------
def test_rerank_writes_a_consistent_set(data: dict[str, Path], capsys) -> None:
    ranks, scores = data["dir"] / "ranks.npy", data["dir"] / "scores.npy"
    for run in (2, 1):
        argv = rerank_argv(data, ranks, "--scores-output", str(scores), run=run)
        assert main(argv) == 0
        assert run_id(np.load(ranks), np.load(scores)) == (run, run)
    assert not temps_in(data["dir"])


def test_four_concurrent_runs_leave_one_runs_outputs(data: dict[str, Path]) -> None:
    """Four `locore rerank` processes write the same ranks + scores at once; the pair on disk
    comes from one run (each run's shortlist names it), whatever the timing."""
    ranks, scores = data["dir"] / "ranks.npy", data["dir"] / "scores.npy"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locore",
                *rerank_argv(
                    data, ranks, "--scores-output", str(scores), "--threads", "1", run=run
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for run in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    by_ranks, by_scores = run_id(np.load(ranks), np.load(scores))
    assert by_ranks == by_scores and by_ranks in range(4)
    assert not temps_in(data["dir"])


WRITER = r"""
import sys
import numpy as np
from locore.fileio import atomic_outputs
run, folder, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(rounds):
    tag = run * 100_000 + i
    with atomic_outputs({"r": f"{folder}/ranks.npy", "s": f"{folder}/scores.npy"}) as tmp:
        with open(tmp["r"], "wb") as f:
            np.save(f, np.full(20_000, tag, np.int64))
        with open(tmp["s"], "wb") as f:
            np.save(f, np.full(10_000, tag, np.float32))
"""


def test_readers_under_the_shared_lock_never_see_a_mix(tmp_path: Path) -> None:
    """Four processes commit 60 sets each; a reader holding the shared lock always reads a
    ranks/scores pair of the same commit, and the final pair is one commit's."""
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(run), str(tmp_path), "60"])
        for run in range(4)
    ]
    seen = 0
    while any(p.poll() is None for p in procs):
        with locked_folder(tmp_path, shared=True):
            if (tmp_path / "scores.npy").exists():
                r, s = np.load(tmp_path / "ranks.npy"), np.load(tmp_path / "scores.npy")
                assert r[0] == r[-1] == int(s[0]) == int(s[-1]), (r[0], s[0])
                seen += 1
        time.sleep(0.002)
    assert all(p.wait() == 0 for p in procs)
    r, s = np.load(tmp_path / "ranks.npy"), np.load(tmp_path / "scores.npy")
    assert r[0] == int(s[0]) and r[0] % 100_000 == 59
    assert seen > 0 and not temps_in(tmp_path)


def test_symlinked_output_is_written_through(tmp_path: Path) -> None:
    target = tmp_path / "real" / "ranks.npy"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "ranks.npy"
    link.symlink_to(target)
    check_outputs({"--output": link})
    with atomic_path(link) as tmp:
        tmp.write_bytes(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert not temps_in(tmp_path) and not temps_in(target.parent)


def test_a_failed_body_changes_nothing(tmp_path: Path) -> None:
    ranks, scores = tmp_path / "ranks.npy", tmp_path / "scores.npy"
    ranks.write_bytes(b"old ranks")
    scores.write_bytes(b"old scores")
    with pytest.raises(OSError, match="disk full"):
        with atomic_outputs({"r": ranks, "s": scores}) as tmp:
            tmp["r"].write_bytes(b"new ranks")
            raise OSError(errno.ENOSPC, "disk full")
    assert ranks.read_bytes() == b"old ranks" and scores.read_bytes() == b"old scores"
    assert not temps_in(tmp_path)
    with pytest.raises(OutputError, match="same file"):
        with atomic_outputs({"a": ranks, "b": tmp_path / "." / "ranks.npy"}):
            pass


def test_full_disk_at_scores_output_keeps_the_old_set(
    data: dict[str, Path], tiny_disk: Path, capsys
) -> None:
    """A real full disk (64 KiB tmpfs): the ranks fit, the scores do not; the old pair stays."""
    ranks, scores = tiny_disk / "ranks.npy", tiny_disk / "scores.npy"
    ranks.write_bytes(b"old ranks")
    scores.write_bytes(b"old scores")
    page = os.statvfs(tiny_disk).f_frsize
    free = os.statvfs(tiny_disk).f_bavail
    (tiny_disk / "filler").write_bytes(b"\0" * page * (free - 1))  # one page left: ranks only
    assert os.statvfs(tiny_disk).f_bavail == 1
    assert main(rerank_argv(data, ranks, "--scores-output", str(scores))) == 1
    err = capsys.readouterr().err
    no_traceback(err)
    assert "disk full" in err and "scores.npy" in err
    assert ranks.read_bytes() == b"old ranks" and scores.read_bytes() == b"old scores"
    assert not temps_in(tiny_disk)
    (tiny_disk / "filler").unlink()
    (tiny_disk / "filler").write_bytes(b"\0" * page * os.statvfs(tiny_disk).f_bavail)
    assert main(rerank_argv(data, ranks)) == 1  # already full: refused before the work
    assert "disk full" in capsys.readouterr().err


FSIZE = r"""
import resource, sys
from locore.cli import main
resource.setrlimit(resource.RLIMIT_FSIZE, (400, 400))
raise SystemExit(main(sys.argv[1:]))
"""


def test_file_size_limit_keeps_the_old_set(data: dict[str, Path]) -> None:
    """RLIMIT_FSIZE (no root needed): the write fails with EFBIG; old pair kept, one line."""
    ranks, scores = data["dir"] / "ranks.npy", data["dir"] / "scores.npy"
    ranks.write_bytes(b"old ranks")
    scores.write_bytes(b"old scores")
    done = subprocess.run(
        [sys.executable, "-c", FSIZE,
         *rerank_argv(data, ranks, "--scores-output", str(scores), "--threads", "1")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    no_traceback(done.stderr)
    assert "file-size limit" in done.stderr
    assert ranks.read_bytes() == b"old ranks" and scores.read_bytes() == b"old scores"
    assert not temps_in(data["dir"])


# ---- interrupts and kills ---------------------------------------------------------------------
SLOW_COMMAND = r"""
import sys, time, types
import locore.cli as cli
module = types.ModuleType("slow_command")
def add_arguments(parser):
    parser.add_argument("--output")
def run(args):
    from locore.fileio import atomic_outputs
    with atomic_outputs({"r": args.output, "s": args.output + ".scores"}) as tmp:
        tmp["r"].write_bytes(b"new")
        print("writing", flush=True)
        time.sleep(60)
    return 0
module.add_arguments, module.run = add_arguments, run
sys.modules["slow_command"] = module
cli.COMMANDS["slow"] = ("slow_command", "test")
raise SystemExit(cli.main(["slow", "--output", sys.argv[1]]))
"""


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_interrupt_leaves_outputs_untouched(tmp_path: Path, sig: int, code: int, word: str) -> None:
    out = tmp_path / "ranks.npy"
    out.write_bytes(b"old")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_COMMAND, str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_signals,  # a shell's background job starts with SIGINT ignored
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    assert len(temps_in(tmp_path)) == 2
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code and word in err and "Traceback" not in err
    assert out.read_bytes() == b"old" and not (tmp_path / "ranks.npy.scores").exists()
    assert not temps_in(tmp_path)


def test_sigkill_leaves_temps_that_the_next_write_removes(tmp_path: Path) -> None:
    """SIGKILL cannot run clean-up: the targets stay whole (old), the temporary files stay
    until the next write of the same target, which removes them (their writer is dead)."""
    out = tmp_path / "ranks.npy"
    out.write_bytes(b"old")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_COMMAND, str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    left = temps_in(tmp_path)
    assert len(left) == 2 and all(f".{proc.pid}." in name for name in left)
    assert remove_stale_temps(out) == []  # a live writer's files are never touched
    proc.kill()
    proc.wait(timeout=30)
    assert out.read_bytes() == b"old" and temps_in(tmp_path) == left
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"next")
    assert out.read_bytes() == b"next"
    assert temps_in(tmp_path) == [n for n in left if n.startswith(".ranks.npy.scores.")]
    assert [p.name for p in remove_stale_temps(tmp_path / "ranks.npy.scores")] == [
        n for n in left if n.startswith(".ranks.npy.scores.")
    ]
    assert not temps_in(tmp_path)


def _default_signals() -> None:
    """In a child: SIGINT as an interactive shell gives it (Python then raises
    KeyboardInterrupt), whatever the test runner inherited (SIG_IGN in a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_signals_during_the_commit_are_held(tmp_path: Path) -> None:
    from locore.fileio import _signals_held

    # Python's own SIGINT handler, whatever the test runner inherited (SIG_IGN in a background
    # job): the commit must hold the interrupt, then deliver it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with _signals_held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                held = True  # reached: the interrupt waited
        assert held
    finally:
        signal.signal(signal.SIGINT, previous)


def test_check_outputs_api(tmp_path: Path) -> None:
    """The helper other commands (eval) use: flags in every message."""
    src = tmp_path / "in.npy"
    src.write_bytes(b"x")
    check_outputs({"--output": tmp_path / "new" / "deeper" / "o.npy"}, {"--input": src})
    assert not (tmp_path / "new").exists()  # checked, not created
    with pytest.raises(OutputError, match="--report is the same file as the input --input"):
        check_outputs({"--report": src}, {"--input": src})
    with pytest.raises(FileNotFoundError, match="--input .*no such file"):
        check_outputs({"--report": tmp_path / "r.json"}, {"--input": tmp_path / "missing"})
    with pytest.raises(OutputError, match="--out .*in.npy is a file; give a folder"):
        check_outputs({}, folders={"--out": src})
    assert not glob.glob(str(tmp_path / ".*.tmp"))


# ---- results ----------------------------------------------------------------------------------
def test_padded_shortlist_rows_stay_padded(data: dict[str, Path]) -> None:
    """faiss pads a short shortlist with id -1: those slots stay at the end, id -1, score -inf."""
    from locore.runtime.shortlist import read_shortlist

    short = read_shortlist(data["nn"])
    sims, ids = short.sims.copy(), short.ids.copy()
    ids[1, 18:], sims[1, 18:] = -1, -np.inf
    write_shortlist(data["dir"] / "padded.npy", sims, ids)
    ranks, scores = data["dir"] / "ranks.npy", data["dir"] / "scores.npy"
    argv = rerank_argv(data, ranks, "--scores-output", str(scores))
    argv[argv.index(str(data["nn"]))] = str(data["dir"] / "padded.npy")
    assert main(argv) == 0
    r, s = np.load(ranks), np.load(scores)
    assert r[1, 18:].tolist() == [-1] * 7 and np.isneginf(s[1, 18:]).all()
    assert sorted(r[1, :18].tolist()) == sorted(ids[1, :18].tolist())
    assert np.isfinite(s[[0, 2]]).all() and (r[[0, 2]] >= 0).all()


def test_nan_scores_are_never_written(
    data: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from locore.runtime import sliding_windows

    real = sliding_windows.Reranker.rerank_many

    def poisoned(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        for q, result in enumerate(real(self, *args, **kwargs)):
            if q == 1:
                result.scores[3] = np.nan
            yield result

    monkeypatch.setattr(sliding_windows.Reranker, "rerank_many", poisoned)
    ranks = data["dir"] / "ranks.npy"
    assert main(rerank_argv(data, ranks)) == 1
    err = capsys.readouterr().err
    no_traceback(err)
    assert "NaN scores for 1 of 3 queries (first: query 1)" in err
    assert not ranks.exists() and not temps_in(data["dir"])

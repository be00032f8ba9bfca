"""Mutation check: plant known bugs in the core modules and see which the test suite kills.

A FIXED list of mutations (no random generation), each a realistic bug in the scan, the
packing, the aggregation, the sliding windows, the score fusion or the feature rows. For each
one the script replaces an exact snippet of the source (it must occur exactly once: a missing
or repeated snippet means the code drifted, and the script stops with an error), runs a focused
subset of the tests in a subprocess, and restores the original bytes (in a ``finally``, also on
SIGINT/SIGTERM), verifying the restore by hash. One mutation at a time, in place.

    python benchmarks/mutation_check.py            # baseline run, then every mutation (~10 min)
    python benchmarks/mutation_check.py --list     # print the mutations
    python benchmarks/mutation_check.py --only 7   # run mutation 7 (repeatable)

A mutation is *killed* when its tests fail (or time out), *survived* when they pass. Before the
mutations, the tests they use run once unmodified (skip with ``--no-baseline``): a failing
baseline would make every mutation look killed. Exit status: 0 when every mutation is killed,
1 when some survive, 2 when the check cannot run (a snippet missing or repeated, a mutant that
does not compile, a failing baseline, a target file changed during the run).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Focused test subsets (the whole check takes about 10 minutes on 2 cores); the fast oracle
# files first, so that most mutants fail within seconds (pytest -x).
SCAN_TESTS = (
    "tests/test_selective_scan.py",
    "tests/test_scan_state_precision.py",
    "tests/test_model_oracles.py",
    "tests/test_model.py",
)
MODEL_TESTS = ("tests/test_model_oracles.py", "tests/test_model.py")
PACKING_TESTS = ("tests/test_packing_oracle.py", "tests/test_backend_ort.py")
WINDOW_TESTS = ("tests/test_rerank_windows.py",)
ROWS_TESTS = ("tests/test_features_io.py", "tests/test_features.py")


class CheckError(RuntimeError):
    """The check cannot run as planned (code drift, a broken mutant, a changed file)."""


@dataclass(frozen=True)
class Mutation:
    file: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    replacement: str
    description: str
    tests: tuple[str, ...]


MUTATIONS: tuple[Mutation, ...] = (
    # ---- the scan: model/selective_scan.py, model/mamba.py ------------------------------------
    Mutation(
        "model/selective_scan.py",
        "return torch.float64 if self.x.dtype == torch.float64 else torch.float32",
        "return torch.float64 if self.x.dtype == torch.float64 else torch.float16",
        "scan state and accumulation in fp16 instead of fp32",
        SCAN_TESTS,
    ),
    Mutation(
        "model/selective_scan.py",
        "            dt = F.softplus(dt)\n",
        "            dt = dt\n",
        "dt_softplus=True does not apply softplus",
        SCAN_TESTS,
    ),
    Mutation(
        "model/selective_scan.py",
        'y = y + (Ds[:, None] if self.variant == "mamba2" else Ds) * xs',
        "y = y",
        "D skip term (D * x) dropped",
        SCAN_TESTS,
    ),
    Mutation(
        "model/selective_scan.py",
        "y = y * F.silu(self.z.to(sdt))",
        "y = y * self.z.to(sdt)",
        "z gate without silu",
        SCAN_TESTS,
    ),
    Mutation(
        "model/selective_scan.py",
        "steps = range(length - 1, -1, -1) if args.reverse else range(length)",
        "steps = range(length)",
        "reference scan: reverse=True runs forward",
        SCAN_TESTS,
    ),
    Mutation(
        "model/selective_scan.py",
        "xin, dtp, Bs, Cs = (t.flip(1) for t in (xin, dtp, Bs, Cs))",
        "xin, dtp, Bs, Cs = (t for t in (xin, dtp, Bs, Cs))",
        "chunked scan: reverse does not flip its inputs (runs forward, output flipped)",
        SCAN_TESTS,
    ),
    Mutation(
        "model/selective_scan.py",
        "    if args.reverse:\n        y = y.flip(1)\n",
        "",
        "chunked scan: reverse output not flipped back",
        SCAN_TESTS,
    ),
    Mutation(
        "model/selective_scan.py",
        "carry_w = _segsum_exp(F.pad(chunk_decay, (1, 0)))[..., :-1, 1:]",
        "carry_w = _segsum_exp(0 * F.pad(chunk_decay, (1, 0)))[..., :-1, 1:]",
        "chunked scan carries state across chunks without decay",
        SCAN_TESTS,
    ),
    Mutation(
        "model/selective_scan.py",
        "y_off = torch.matmul(Cc[:, :, None], incoming.transpose(-1, -2)) * decay_in[..., None]",
        "y_off = torch.matmul(Cc[:, :, None], incoming.transpose(-1, -2))",
        "chunked scan: incoming state not decayed within the chunk",
        SCAN_TESTS,
    ),
    Mutation(
        "model/selective_scan.py",
        "decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)",
        "decay_to_end = torch.exp(a_cum[..., -1:] - a_cum + a[..., :1])",
        "chunked scan: end-of-chunk state decayed one step too many",
        SCAN_TESTS,
    ),
    Mutation(
        "model/selective_scan.py",
        "    causal = torch.ones(t, t, dtype=torch.bool, device=a.device).tril()",
        "    causal = torch.ones(t, t, dtype=torch.bool, device=a.device).tril(-1)",
        "segment-sum mask drops the diagonal (a token does not see its own input)",
        SCAN_TESTS,
    ),
    Mutation(
        "model/mamba.py",
        "dt = F.softplus(dt_raw.float() + self.dt_bias[k].float()) * keep.float()",
        "dt = F.softplus(dt_raw.float() + self.dt_bias[k].float())",
        "padding tokens get dt != 0 (they enter the scan state)",
        SCAN_TESTS,
    ),
    Mutation(
        "model/mamba.py",
        "((bf, cf, dtf, False), (bb, cb, dtb, True))",
        "((bf, cf, dtf, False), (bb, cb, dtb, False))",
        "bidirectional block: the backward scan runs forward",
        SCAN_TESTS,
    ),
    # ---- aggregation and embedding: model/reranker.py -----------------------------------------
    Mutation(
        "model/reranker.py",
        "            return per_img[..., -1]\n",
        "            return per_img[..., 0]\n",
        'aggregation "end" reads the IMG token instead of SEP',
        MODEL_TESTS,
    ),
    Mutation(
        "model/reranker.py",
        "            return per_img[..., 0]\n",
        "            return desc_logits[..., 0]\n",
        'aggregation "start" reads the first descriptor instead of IMG',
        MODEL_TESTS,
    ),
    Mutation(
        "model/reranker.py",
        'masked = desc_logits.masked_fill(~gmask, float("-inf")).amax(-1)',
        "masked = desc_logits.amax(-1)",
        'aggregation "max" ignores the descriptor mask',
        MODEL_TESTS,
    ),
    Mutation(
        "model/reranker.py",
        "return torch.where(gmask.any(-1), masked, torch.zeros_like(masked))",
        "return masked",
        'aggregation "max": a fully padded image scores -inf instead of 0',
        MODEL_TESTS,
    ),
    Mutation(
        "model/reranker.py",
        "return (desc_logits * w).sum(-1) / w.sum(-1).clamp_min(1.0)",
        "return (desc_logits * w).sum(-1) / cfg.num_desc",
        'aggregation "mean" divides by Nd instead of the valid count',
        MODEL_TESTS,
    ),
    Mutation(
        "model/reranker.py",
        "per_img = token_logits.float().reshape(bsz, ngal1, cfg.tokens_per_image)[:, 1:]",
        "per_img = token_logits.float().reshape(bsz, ngal1, cfg.tokens_per_image)[:, :-1]",
        "scores taken from images shifted by one (query scored, last gallery image dropped)",
        MODEL_TESTS,
    ),
    Mutation(
        "model/reranker.py",
        "        tok = tok * dmask[..., None].to(dtype)\n",
        "",
        "padded descriptor tokens not zeroed in the embedding",
        MODEL_TESTS,
    ),
    Mutation(
        "model/reranker.py",
        "image_valid = dmask.any(dim=-1, keepdim=True)",
        "image_valid = torch.ones_like(dmask[..., :1])",
        "IMG/SEP tokens of a fully padded image stay valid",
        MODEL_TESTS,
    ),
    Mutation(
        "model/reranker.py",
        "img = img + self.global_proj(glob.to(dtype))",
        "img = img + 0 * self.global_proj(glob.to(dtype))",
        "use_global model ignores the global descriptors",
        MODEL_TESTS,
    ),
    # ---- packing: runtime/packing.py, runtime/local_features.py -------------------------------
    Mutation(
        "runtime/packing.py",
        "desc[..., :rows, :] = np.where(feats.mask[..., None], feats.descriptors, 0.0)",
        "desc[..., :rows, :] = feats.descriptors",
        "padded descriptors not zeroed in packing",
        PACKING_TESTS,
    ),
    Mutation(
        "runtime/packing.py",
        "valid = np.zeros((*lead_shape, nd), dtype=bool)",
        "valid = np.ones((*lead_shape, nd), dtype=bool)",
        "rows added as padding (image with < Nd rows) marked valid",
        PACKING_TESTS,
    ),
    Mutation(
        "runtime/packing.py",
        "valid[..., :rows] = feats.mask",
        "valid[..., :rows] = True",
        "the records' own padding rows marked valid",
        PACKING_TESTS,
    ),
    Mutation(
        "runtime/packing.py",
        "                return np.clip(scale, 0, n - 1)\n",
        "                return scale\n",
        "clip_scales=True does not clamp the scale ids",
        PACKING_TESTS,
    ),
    Mutation(
        "runtime/local_features.py",
        "t = slice(None, num_desc)",
        "t = slice(-num_desc, None)",
        "first(Nd) takes the last Nd rows (the worst by weight)",
        PACKING_TESTS,
    ),
    # ---- sliding windows and fusion: runtime/sliding_windows.py -------------------------------
    Mutation(
        "runtime/sliding_windows.py",
        '    if order == "end-to-start":\n        return backward\n',
        '    if order == "end-to-start":\n        return forward\n',
        'window order reversed ("end-to-start" visits start to end)',
        WINDOW_TESTS,
    ),
    Mutation(
        "runtime/sliding_windows.py",
        "for s in range(0, length, stride)",
        "for s in range(0, length, stride + 1)",
        "window stride off by one",
        WINDOW_TESTS,
    ),
    Mutation(
        "runtime/sliding_windows.py",
        "if s == 0 or s - stride + w < length]",
        "if s == 0 or s - stride + w <= length]",
        "tail window skip test off by one (re-scores a tail already covered)",
        WINDOW_TESTS,
    ),
    Mutation(
        "runtime/sliding_windows.py",
        "        return forward + backward[1:]\n",
        "        return forward + backward\n",
        '"start-to-end-to-start" visits the turning window twice',
        WINDOW_TESTS,
    ),
    Mutation(
        "runtime/sliding_windows.py",
        "return alpha * g + (1.0 - alpha) * sigmoid(temperature * np.asarray(logits, "
        "dtype=np.float64))",
        "return (1.0 - alpha) * g + alpha * sigmoid(temperature * np.asarray(logits, "
        "dtype=np.float64))",
        "fusion alpha swapped: (1-alpha)*global + alpha*sigmoid",
        WINDOW_TESTS,
    ),
    Mutation(
        "runtime/sliding_windows.py",
        "sigmoid(temperature * np.asarray(logits, dtype=np.float64))",
        "sigmoid(np.asarray(logits, dtype=np.float64))",
        "fusion ignores the temperature",
        WINDOW_TESTS,
    ),
    Mutation(
        "runtime/sliding_windows.py",
        'order = np.argsort(-fused, kind="stable")',
        'order = np.argsort(fused, kind="stable")[::-1]',
        "window re-sort breaks ties in reverse order (not stable)",
        WINDOW_TESTS,
    ),
    Mutation(
        "runtime/sliding_windows.py",
        "        sims[pos] = sims[pos][order]\n",
        "",
        "global similarities not permuted with their images",
        WINDOW_TESTS,
    ),
    Mutation(
        "runtime/sliding_windows.py",
        "pos = slice(start, min(start + w, k))",
        "pos = slice(start, start + w)",
        "last window runs past the top K",
        WINDOW_TESTS,
    ),
    # ---- feature rows: runtime/ames.py ----------------------------------------------------------
    Mutation(
        "runtime/ames.py",
        "mask = rows[..., MASK_COLUMN] < 0.5",
        "mask = rows[..., MASK_COLUMN] > 0.5",
        "from_rows: mask column inverted (1 read as valid)",
        ROWS_TESTS,
    ),
    Mutation(
        "runtime/ames.py",
        "rows[..., MASK_COLUMN] = ~np.asarray(features.mask, dtype=bool)",
        "rows[..., MASK_COLUMN] = np.asarray(features.mask, dtype=bool)",
        "to_rows: mask written as LocalFeatures.mask (1 = valid)",
        ROWS_TESTS,
    ),
    Mutation(
        "runtime/ames.py",
        "raw_scale = rows[..., SCALE_COLUMN]",
        "raw_scale = rows[..., WEIGHT_COLUMN]",
        "from_rows: scale read from the weight column",
        ROWS_TESTS,
    ),
    Mutation(
        "runtime/ames.py",
        "xy=np.ascontiguousarray(rows[..., XY_COLUMNS], dtype=np.float32)",
        "xy=np.ascontiguousarray(rows[..., XY_COLUMNS][..., ::-1], dtype=np.float32)",
        "from_rows: x and y columns swapped",
        ROWS_TESTS,
    ),
    Mutation(
        "runtime/ames.py",
        "data = self._dataset[unique.tolist(), :rows][inverse]",
        "data = self._dataset[unique.tolist(), :rows]",
        "FeatureFile.read returns sorted unique ids, not the asked order",
        ROWS_TESTS,
    ),
)


# ---- mechanics -----------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mutant_source(mutation: Mutation, source: str) -> str:
    """The file's text with the mutation applied; CheckError unless the snippet occurs once."""
    count = source.count(mutation.original)
    if count != 1:
        raise CheckError(
            f"{mutation.file}: the snippet of mutation {mutation.description!r} occurs {count} "
            f"times (must be exactly once); the code drifted, update {Path(__file__).name}:\n"
            f"{mutation.original}"
        )
    mutated = source.replace(mutation.original, mutation.replacement)
    try:
        compile(mutated, mutation.file, "exec")
    except SyntaxError as err:
        raise CheckError(f"mutation {mutation.description!r} does not compile: {err}") from err
    return mutated


def drop_bytecode(path: Path) -> None:
    """Remove the cached bytecode of ``path``: a mutant or a restore written within the same
    second and with the size of the previous version would otherwise reuse a stale .pyc."""
    for pyc in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        pyc.unlink(missing_ok=True)


class _Interrupted(BaseException):
    pass


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise _Interrupted(signal.Signals(signum).name)


@contextmanager
def mutated(path: Path, original: bytes, new_text: str) -> Iterator[None]:
    """Write ``new_text`` to ``path``; put ``original`` back afterwards, whatever happens."""
    new_bytes = new_text.encode()
    try:
        path.write_bytes(new_bytes)
        drop_bytecode(path)
        yield
    finally:
        current = path.read_bytes()
        if current not in (new_bytes, original):
            # someone edited the file during the run: restore, and keep their bytes aside
            aside = path.with_name(path.name + ".mutation-check-other")
            aside.write_bytes(current)
            path.write_bytes(original)
            drop_bytecode(path)
            raise CheckError(
                f"{path} changed during the mutation run; restored the bytes it had before the "
                f"mutation, the other version is in {aside}"
            )
        path.write_bytes(original)
        drop_bytecode(path)
        if hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(original).digest():
            raise CheckError(f"restoring {path} failed: its hash differs from the original")


def run_tests(tests: Sequence[str], timeout: float) -> tuple[str, float, str]:
    """Run pytest on ``tests``; returns (passed | failed | timeout, seconds, output tail)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    start = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
            status = "passed" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            if proc.poll() is None:  # timeout or interrupted: end our pytest and its children
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.seek(0)
        tail = out.read().decode(errors="replace")[-3000:]
    return status, time.monotonic() - start, tail


@dataclass
class Result:
    index: int
    mutation: Mutation
    status: str  # killed | survived
    seconds: float
    detail: str


def check_mutation(
    index: int, mutation: Mutation, hashes: dict[str, str], timeout: float, verbose: bool
) -> Result:
    path = ROOT / mutation.file
    original = path.read_bytes()
    if sha256(path) != hashes[mutation.file]:
        raise CheckError(f"{mutation.file} changed since the check started")
    text = mutant_source(mutation, original.decode())
    with mutated(path, original, text):
        status, seconds, tail = run_tests(mutation.tests, timeout)
    if sha256(path) != hashes[mutation.file]:
        raise CheckError(f"{mutation.file} differs from its original after the restore")
    killed = status != "passed"
    lines = [ln for ln in tail.strip().splitlines() if ln.strip()]
    detail = lines[-1] if lines else ""
    if verbose:
        print(tail, flush=True)
    return Result(
        index, mutation, "killed" if killed else "survived", seconds, f"{status}: {detail}"
    )


def warn_uncommitted(files: Sequence[str]) -> None:
    """Warn (only) when target files differ from git HEAD: the check then mutates, and
    restores, the working-tree version, which may be someone's half-done edit."""
    try:
        out = subprocess.run(
            ["git", "diff", "--name-only", "HEAD", "--", *files],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return
    if out:
        print(
            f"warning: these target files differ from HEAD, the check runs on the working "
            f"tree as it is: {' '.join(out)}",
            file=sys.stderr,
        )


def print_list(selected: Sequence[int]) -> None:
    for i in selected:
        m = MUTATIONS[i - 1]
        print(f"{i:3d}  {m.file:28s}  {m.description}")
        print(f"     tests: {' '.join(m.tests)}")


def print_table(results: Sequence[Result]) -> None:
    width = max([len(r.mutation.description) for r in results] + [11])
    head = f"{'id':>3}  {'file':28s}  {'description':{width}s}  {'result':8s}  {'seconds':>7}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r.index:3d}  {r.mutation.file:28s}  {r.mutation.description:{width}s}  "
            f"{r.status:8s}  {r.seconds:7.1f}"
        )
    total = len(results)
    killed = sum(r.status == "killed" for r in results)
    pct = 100.0 * killed / total if total else 0.0
    print(f"\nmutations {total}, killed {killed}, survived {total - killed} ({pct:.1f} %)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument(
        "--only", type=int, action="append", metavar="N", help="run mutation N (repeatable)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds per test run (default 300)"
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the run of the unmodified tests"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each pytest tail")
    args = parser.parse_args(argv)

    selected = args.only or list(range(1, len(MUTATIONS) + 1))
    bad = [i for i in selected if not 1 <= i <= len(MUTATIONS)]
    if bad:
        parser.error(f"--only takes 1..{len(MUTATIONS)}, got {bad}")
    if args.list:
        print_list(selected)
        return 0

    try:
        # Every snippet must be present (once) before anything is touched.
        files = sorted({MUTATIONS[i - 1].file for i in selected})
        hashes = {f: sha256(ROOT / f) for f in files}
        for i in selected:
            m = MUTATIONS[i - 1]
            mutant_source(m, (ROOT / m.file).read_text())
            missing = [t for t in m.tests if not (ROOT / t).is_file()]
            if missing:
                raise CheckError(f"mutation {i}: test files {missing} do not exist")
    except CheckError as err:
        print(f"mutation check: {err}", file=sys.stderr)
        return 2
    warn_uncommitted(files)

    previous = {
        sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    results: list[Result] = []
    try:
        if not args.no_baseline:
            tests = sorted({t for i in selected for t in MUTATIONS[i - 1].tests})
            print(f"baseline: {' '.join(tests)}", flush=True)
            status, seconds, tail = run_tests(tests, args.timeout * 2)
            if status != "passed":
                print(tail, file=sys.stderr)
                raise CheckError(f"the unmodified tests {status} ({seconds:.0f} s); fix them first")
            print(f"baseline passed in {seconds:.1f} s", flush=True)
        for i in selected:
            m = MUTATIONS[i - 1]
            result = check_mutation(i, m, hashes, args.timeout, args.verbose)
            results.append(result)
            print(
                f"[{i}/{len(MUTATIONS)}] {result.status:8s} {result.seconds:6.1f} s  "
                f"{m.file}: {m.description}  ({result.detail[:100]})",
                flush=True,
            )
    except CheckError as err:
        print(f"mutation check: {err}", file=sys.stderr)
        return 2
    except _Interrupted as sig:
        print(f"mutation check: interrupted ({sig}); the files are restored", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        changed = [f for f in files if sha256(ROOT / f) != hashes[f]]
        if changed:
            print(f"mutation check: files differ after the run: {changed}", file=sys.stderr)

    print()
    print_table(results)
    survivors = [r for r in results if r.status == "survived"]
    for r in survivors:
        print(f"survived: {r.index} {r.mutation.file}: {r.mutation.description}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())

"""Global descriptors: a k-means codebook, VLAD, two simple baselines, and their files.

Torch-free (numpy only). The first-stage shortlist of the pipeline (docs/design.md §2) ranks the
gallery by the inner product of these vectors, so every vector returned here is L2-normalised
(or all zeros when an image has no local descriptors, which then matches nothing).

Options, all measured in ``benchmarks/global_descriptor_choice.py``:

- ``vlad``: VLAD over a k-means codebook of RootSIFT (residual sums per visual word,
  signed-square-root power normalisation, per-word intra-normalisation, global L2), optionally
  followed by a PCA-whitening fitted on the same training images;
- ``mean``: mean-pooled RootSIFT (L2-normalised), no training;
- ``color``: an HSV colour histogram of the whole image, no local features at all.

Files (docs/design.md §8): raw float32 [N, D] (read as a memmap; the file carries no shape), or
``.npy``; :func:`read_global_descriptors` and :func:`write_global_descriptors`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from locore.errors import UsageError
from locore.fileio import atomic_path
from locore.runtime.ames import FormatError

logger = logging.getLogger(__name__)

CODEBOOK_FORMAT = "locore-codebook-v1"


class CodebookError(ValueError):
    """A codebook file or its input does not have the expected shape or content."""


def _sq_dists(x: np.ndarray, centroids: np.ndarray, c_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[N, K]`` (float32, clipped at 0)."""
    d = (x * x).sum(1, keepdims=True) - 2.0 * (x @ centroids.T) + c_sq[None, :]
    return np.maximum(d, 0.0)


def assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Index of the nearest centroid for each row of ``x``: ``[N] int64``."""
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    c_sq = (c * c).sum(1)
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), chunk):
        out[start : start + chunk] = _sq_dists(x[start : start + chunk], c, c_sq).argmin(1)
    return out


def kmeans(
    x: np.ndarray, k: int, *, n_iter: int = 20, seed: int = 0, max_points: int = 50_000
) -> np.ndarray:
    """Deterministic k-means (k-means++ seeding, Lloyd iterations): centroids ``[k, D] float32``.

    ``x``: ``[N, D]``; at most ``max_points`` rows (a seeded subsample) are used. Empty clusters
    are re-seeded with the points farthest from their centroid, so the result always has k
    distinct rows when ``x`` has at least k distinct rows.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise CodebookError(f"k-means input must be [N, D], got shape {x.shape}")
    if len(x) < k:
        raise CodebookError(
            f"k-means with k={k} needs at least {k} training vectors, got {len(x)}; "
            "use more training images or a smaller k"
        )
    rng = np.random.default_rng(seed)
    if len(x) > max_points:
        x = x[np.sort(rng.choice(len(x), size=max_points, replace=False))]
    n = len(x)
    # k-means++ seeding.
    centroids = np.empty((k, x.shape[1]), dtype=np.float32)
    centroids[0] = x[rng.integers(n)]
    closest = _sq_dists(x, centroids[:1], (centroids[:1] ** 2).sum(1))[:, 0]
    for i in range(1, k):
        total = float(closest.sum())
        if total <= 0.0:  # fewer distinct points than k: pick any remaining row
            idx = int(rng.integers(n))
        else:
            idx = int(np.searchsorted(np.cumsum(closest, dtype=np.float64), rng.random() * total))
            idx = min(idx, n - 1)
        centroids[i] = x[idx]
        d_new = _sq_dists(x, centroids[i : i + 1], (centroids[i : i + 1] ** 2).sum(1))[:, 0]
        closest = np.minimum(closest, d_new)
    # Lloyd iterations.
    labels = np.full(n, -1, dtype=np.int64)
    for it in range(n_iter):
        c_sq = (centroids * centroids).sum(1)
        dists = _sq_dists(x, centroids, c_sq)
        new_labels = dists.argmin(1)
        if np.array_equal(new_labels, labels):
            logger.debug("k-means converged after %d iterations", it)
            break
        labels = new_labels
        counts = np.bincount(labels, minlength=k)
        # Per-column bincount: the same float64 sums, in the same order, as np.add.at(sums,
        # labels, x), about 6x faster (k-means runs on the first use of `locore index`).
        sums = np.stack(
            [np.bincount(labels, weights=x[:, j], minlength=k) for j in range(x.shape[1])], 1
        )
        nonempty = counts > 0
        centroids[nonempty] = (sums[nonempty] / counts[nonempty, None]).astype(np.float32)
        empty = np.flatnonzero(~nonempty)
        if len(empty):
            own = dists[np.arange(n), labels]
            far = np.argsort(-own, kind="stable")[: len(empty)]
            centroids[empty] = x[far]
    return centroids


def pca_whitening(x: np.ndarray, dim: int, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Fit a PCA-whitening on rows of ``x`` ``[N, D]``: ``(mean [D], proj [D, dim])`` float32.

    ``dim`` is clipped to ``min(N - 1, D)``. Apply with ``(v - mean) @ proj`` then L2.
    """
    x = np.asarray(x, dtype=np.float64)
    dim = int(min(dim, len(x) - 1, x.shape[1]))
    if dim < 1:
        raise CodebookError(f"PCA-whitening needs at least 2 training vectors, got {len(x)}")
    mean = x.mean(0)
    xc = x - mean
    # Eigen-decomposition through the (smaller) Gram matrix when N < D.
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    var = (s[:dim] ** 2) / max(len(x) - 1, 1)
    # Deterministic sign: the largest-magnitude entry of each component is positive.
    signs = np.sign(vt[np.arange(dim), np.abs(vt[:dim]).argmax(1)])
    signs[signs == 0] = 1.0
    proj = (vt[:dim] * signs[:, None]).T / np.sqrt(var + eps)[None, :]
    return mean.astype(np.float32), proj.astype(np.float32)


def l2_normalize(v: np.ndarray, axis: int = -1) -> np.ndarray:
    """L2-normalise along ``axis``; all-zero vectors stay zero."""
    v = np.asarray(v, dtype=np.float32)
    norm = np.linalg.norm(v, axis=axis, keepdims=True)
    return np.where(norm > 0, v / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


@dataclass
class Codebook:
    """Visual words for VLAD, with an optional PCA-whitening of the VLAD vectors.

    centroids: [K, Dl] float32; pca_mean: [K * Dl] float32; pca_proj: [K * Dl, Dg] float32.
    """

    centroids: np.ndarray
    pca_mean: np.ndarray | None = None
    pca_proj: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        if self.centroids.ndim != 2:
            raise CodebookError(f"centroids must be [K, D], got shape {self.centroids.shape}")
        if (self.pca_mean is None) != (self.pca_proj is None):
            raise CodebookError("pca_mean and pca_proj must be given together")
        if self.pca_proj is not None and self.pca_mean is not None:
            self.pca_mean = np.asarray(self.pca_mean, dtype=np.float32)
            self.pca_proj = np.asarray(self.pca_proj, dtype=np.float32)
            if self.pca_proj.shape[0] != self.vlad_dim or self.pca_mean.shape != (self.vlad_dim,):
                raise CodebookError(
                    f"PCA must map {self.vlad_dim}-d VLAD vectors (K={self.num_words} x "
                    f"D={self.desc_dim}), got mean {self.pca_mean.shape} and "
                    f"projection {self.pca_proj.shape}"
                )

    @property
    def num_words(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def desc_dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def vlad_dim(self) -> int:
        return self.num_words * self.desc_dim

    @property
    def output_dim(self) -> int:
        return int(self.pca_proj.shape[1]) if self.pca_proj is not None else self.vlad_dim

    @classmethod
    def fit(
        cls,
        descriptor_sets: list[np.ndarray],
        k: int = 64,
        *,
        seed: int = 0,
        n_iter: int = 20,
        max_points: int = 50_000,
        pca_dim: int | None = None,
    ) -> Codebook:
        """Fit k-means on the union of ``descriptor_sets`` (each ``[Ni, Dl]``), then optionally
        a PCA-whitening to ``pca_dim`` on the VLAD vectors of the same sets."""
        nonempty = [np.asarray(d, dtype=np.float32) for d in descriptor_sets if len(d)]
        if not nonempty:
            raise CodebookError("cannot fit a codebook: every training image has 0 descriptors")
        x = np.concatenate(nonempty)
        centroids = kmeans(x, k, n_iter=n_iter, seed=seed, max_points=max_points)
        meta = {"k": k, "seed": seed, "n_iter": n_iter, "train_descriptors": int(len(x))}
        book = cls(centroids, meta=meta)
        if pca_dim:
            vlads = np.stack([vlad(d, book.centroids) for d in nonempty])
            mean, proj = pca_whitening(vlads, pca_dim)
            book = cls(centroids, mean, proj, meta={**meta, "pca_dim": int(proj.shape[1])})
        logger.info(
            "fitted a %d-word codebook on %d descriptors (%s)",
            k,
            len(x),
            f"PCA-whitened to {book.output_dim}" if pca_dim else "no PCA",
        )
        return book

    def encode(self, descriptors: np.ndarray) -> np.ndarray:
        """Global vector ``[output_dim] float32`` of one image's descriptors ``[N, Dl]``."""
        v = vlad(descriptors, self.centroids)
        if self.pca_proj is None or self.pca_mean is None:
            return v
        if not v.any():  # no descriptors: matches nothing
            return np.zeros(self.output_dim, dtype=np.float32)
        return l2_normalize((v - self.pca_mean) @ self.pca_proj)

    def save(self, path: str | Path) -> None:
        import json

        arrays: dict[str, np.ndarray] = {
            "format": np.array(CODEBOOK_FORMAT),
            "centroids": self.centroids,
            "meta": np.array(json.dumps(self.meta, sort_keys=True)),
        }
        if self.pca_proj is not None and self.pca_mean is not None:
            arrays["pca_mean"] = self.pca_mean
            arrays["pca_proj"] = self.pca_proj
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> Codebook:
        import json

        path = Path(path)
        if not path.is_file():
            raise CodebookError(f"codebook file {path} does not exist")
        try:
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                fmt = str(data["format"]) if "format" in data else "<none>"
                if fmt != CODEBOOK_FORMAT:
                    raise CodebookError(
                        f"{path} is not a locore codebook (format {fmt!r}, expected "
                        f"{CODEBOOK_FORMAT!r}); fit one with Codebook.fit(...).save(path)"
                    )
                book = cls(
                    data["centroids"],
                    data["pca_mean"] if "pca_mean" in data else None,
                    data["pca_proj"] if "pca_proj" in data else None,
                    meta=json.loads(str(data["meta"])),
                )
        except (CodebookError, PermissionError):
            raise
        except Exception as exc:  # zipfile.BadZipFile, ValueError, KeyError, OSError, ...
            raise CodebookError(
                f"{path} is not a readable codebook ({type(exc).__name__}: {exc}); expected an "
                "npz written by Codebook.save"
            ) from exc
        if not all(
            np.isfinite(a).all()
            for a in (book.centroids, book.pca_mean, book.pca_proj)
            if a is not None
        ):
            raise CodebookError(f"{path} holds NaN or infinite values; fit the codebook again")
        return book


def vlad(descriptors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """VLAD ``[K * Dl] float32``: residual sums per word, signed sqrt, intra- and global L2."""
    k, d = centroids.shape
    descriptors = np.asarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2 or descriptors.shape[1] != d:
        raise CodebookError(
            f"descriptors must be [N, {d}] to match the codebook, got shape {descriptors.shape}"
        )
    out = np.zeros((k, d), dtype=np.float32)
    if len(descriptors) == 0:
        return out.ravel()
    labels = assign(descriptors, centroids)
    np.add.at(out, labels, descriptors - centroids[labels])
    out = np.sign(out) * np.sqrt(np.abs(out))
    out = l2_normalize(out, axis=1)
    return l2_normalize(out.ravel())


def mean_pool(descriptors: np.ndarray) -> np.ndarray:
    """Mean of the descriptors ``[N, Dl]``, L2-normalised: ``[Dl] float32``."""
    descriptors = np.asarray(descriptors, dtype=np.float32)
    if len(descriptors) == 0:
        return np.zeros(descriptors.shape[1], dtype=np.float32)
    return l2_normalize(descriptors.mean(0))


def color_histogram(image: np.ndarray, bins: tuple[int, int, int] = (8, 4, 4)) -> np.ndarray:
    """HSV histogram of a BGR (or gray) uint8 image, square-rooted and L2-normalised.

    Returns ``[prod(bins)] float32``. A baseline that uses no local features.
    """
    from locore.deps import require

    cv2 = require("cv2")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(bins), [0, 180, 0, 256, 0, 256])
    hist = hist.ravel().astype(np.float32)
    total = float(hist.sum())
    if total <= 0:
        return np.zeros(hist.shape, dtype=np.float32)
    return l2_normalize(np.sqrt(hist / total))


# ---- files ---------------------------------------------------------------------------------
def read_global_descriptors(
    path: str | Path,
    dim: int | None = None,
    num_images: int | None = None,
    *,
    check_finite: bool = True,
) -> np.ndarray:
    """Global descriptors [N, D] float32 as a read-only memmap.

    Raw files carry no shape: give ``dim`` (D), or ``num_images`` (N) to infer D from the file
    size. ``.npy`` files carry their shape. Every value must be finite (the file is scanned
    once, in blocks; ``check_finite=False`` skips the scan): a NaN would make every similarity
    with that image NaN. Raises :class:`~locore.runtime.ames.FormatError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"global descriptor file {path} does not exist")
    for name, value in (("dim", dim), ("num_images", num_images)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1
        ):
            raise UsageError(f"{name} must be a positive integer (or None), got {value!r}")
    if path.suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except PermissionError as exc:
            raise PermissionError(f"global descriptor file {path} is not readable: {exc}") from exc
        except Exception as exc:  # numpy raises ValueError, OSError, EOFError... on damage
            raise FormatError(
                f"{path} is not a readable .npy file ({type(exc).__name__}: {exc}); expected "
                "[N, D] float32 global descriptors"
            ) from exc
        if not isinstance(array, np.ndarray) or array.ndim != 2 or array.dtype != np.float32:
            raise FormatError(
                f"{path} must hold [N, D] float32, got {list(np.shape(array))} "
                f"{getattr(array, 'dtype', type(array).__name__)}"
            )
        if dim is not None and array.shape[1] != dim:
            raise FormatError(f"{path} holds {array.shape[1]}-d descriptors, expected {dim}-d")
        if num_images is not None and array.shape[0] != num_images:
            raise FormatError(
                f"{path} holds {array.shape[0]} descriptors, expected {num_images} images"
            )
    else:
        array = _read_raw(path, dim, num_images)
    if check_finite:
        _check_finite(array, path)
    return array


def _read_raw(path: Path, dim: int | None, num_images: int | None) -> np.ndarray:
    size = path.stat().st_size
    if size % 4:
        raise FormatError(
            f"{path} has {size} bytes, not a whole number of float32 values (4 bytes each); "
            "the file is truncated or not raw float32"
        )
    count = size // 4
    if dim is None and num_images is None:
        raise UsageError(
            f"{path} is a raw float32 file without a shape; give its descriptor dimension "
            "(dim=..., CLI --global-dim) or its number of images (num_images=...)"
        )
    if dim is None:
        assert num_images is not None
        if count % num_images:
            raise FormatError(
                f"{path} holds {count} float32 values, not divisible by {num_images} images"
            )
        dim = count // num_images
    if count % dim:
        raise FormatError(
            f"{path} holds {count} float32 values ({size} bytes), not divisible by dim {dim}: "
            f"{count // dim} descriptors and {count % dim} values left over. Is dim right, or "
            "is the file truncated?"
        )
    n = count // dim
    if n == 0:
        raise FormatError(f"{path} is empty; expected [N, {dim}] float32 global descriptors")
    if num_images is not None and n != num_images:
        raise FormatError(
            f"{path} holds {n} descriptors of dimension {dim}, expected {num_images} images"
        )
    try:
        return np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim))
    except PermissionError as exc:
        raise PermissionError(f"global descriptor file {path} is not readable: {exc}") from exc


def _check_finite(array: np.ndarray, path: Path, block: int = 1 << 16) -> None:
    for start in range(0, array.shape[0], block):
        part = np.asarray(array[start : start + block])
        bad = ~np.isfinite(part)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise FormatError(
                f"{path}: global descriptor {start + row} holds {part[row, col]} at dimension "
                f"{col}; descriptors must be finite (a NaN makes every similarity with that "
                "image NaN). Recompute the descriptors"
            )


def write_global_descriptors(path: str | Path, descriptors: np.ndarray) -> None:
    """Write [N, D] descriptors as raw float32 (or ``.npy`` by suffix), atomically."""
    array = np.ascontiguousarray(descriptors, dtype=np.float32)
    if array.ndim != 2:
        raise FormatError(f"global descriptors must be [N, D], got {list(array.shape)}")
    if not np.isfinite(array).all():
        row = int(np.argwhere(~np.isfinite(array))[0][0])
        raise FormatError(
            f"global descriptor {row} holds NaN or inf (after conversion to float32); only "
            "finite descriptors are written"
        )
    with atomic_path(path) as tmp:
        if Path(path).suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, array)
        else:
            array.tofile(tmp)

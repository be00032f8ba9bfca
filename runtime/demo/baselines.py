"""The classical baseline the demo compares LOCORE with: RANSAC spatial verification.

The strongest keypoints of the query (a budget: the model's 48, or every kept one, up to the
extractor's 1,000) are matched to those of a shortlisted image (2-NN, Lowe's ratio test);
OpenCV RANSAC fits a homography and the inlier count re-ranks the shortlist. Keypoints are
``(xy [n, 2] float32 pixels, descriptors [n, 128] float32 RootSIFT)`` pairs, strongest first,
as :func:`locore.runtime.demo.split_files.load_keypoints` returns them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from locore.deps import require

KeypointSet = tuple[np.ndarray, np.ndarray]  # (xy [n, 2] float32 pixels, desc [n, 128] float32)


def ransac_inliers(
    query: KeypointSet,
    image: KeypointSet,
    ratio: float = 0.8,
    threshold_px: float = 6.0,
) -> int:
    """Homography inliers between two images' keypoints: Lowe's ratio test on 2-NN matches,
    then OpenCV RANSAC (``threshold_px`` reprojection error). 0 below 4 good matches."""
    cv2 = require("cv2")
    (qxy, qd), (gxy, gd) = query, image
    if len(qd) < 2 or len(gd) < 2:
        return 0
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs = matcher.knnMatch(qd, gd, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < ratio * n.distance]
    if len(good) < 4:
        return 0
    src = qxy[[m.queryIdx for m in good]].reshape(-1, 1, 2)
    dst = gxy[[m.trainIdx for m in good]].reshape(-1, 1, 2)
    _, inl = cv2.findHomography(src, dst, cv2.RANSAC, threshold_px, maxIters=2000, confidence=0.995)
    return 0 if inl is None else int(inl.sum())


def first_keypoints(keypoints: KeypointSet, budget: int | None) -> KeypointSet:
    """The ``budget`` strongest keypoints of one image (all when None): the first rows, as the
    extractor keeps them strongest first (the model's ``num_desc`` descriptors are the same
    first rows, :meth:`locore.runtime.sift.SiftExtractor.features_from_keypoints`)."""
    if budget is None:
        return keypoints
    if budget < 1:
        raise ValueError(f"a keypoint budget must be >= 1 (or None for all), got {budget}")
    xy, desc = keypoints
    return xy[:budget], desc[:budget]


def spatial_verification(
    query: KeypointSet,
    database: Sequence[KeypointSet],
    ids: np.ndarray,
    sims: np.ndarray,
    max_keypoints: int | None = None,
) -> np.ndarray:
    """One query's shortlist re-ranked by RANSAC inliers: ``ids [K] int64``, best first.

    database: keypoints of every database image (``ids`` index it); ids, sims: [K] the
    shortlist; max_keypoints: the budget per image, the strongest first (None: every kept
    keypoint). More inliers first; the global similarity breaks ties.
    """
    q = first_keypoints(query, max_keypoints)
    inliers = np.array(
        [ransac_inliers(q, first_keypoints(database[int(i)], max_keypoints)) for i in ids],
        dtype=np.float64,
    )
    order = np.lexsort((-np.asarray(sims), -inliers))
    return np.asarray(ids)[order]

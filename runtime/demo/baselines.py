"""The classical baseline the demo compares LOCORE with: RANSAC spatial verification.

Every kept keypoint of the query is matched to every kept keypoint of a shortlisted image
(2-NN, Lowe's ratio test); OpenCV RANSAC fits a homography and the inlier count re-ranks the
shortlist. Keypoints are ``(xy [n, 2] float32 pixels, descriptors [n, 128] float32 RootSIFT)``
pairs, as :func:`locore.runtime.demo.split_files.load_keypoints` returns them.
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


def spatial_verification(
    query: KeypointSet, database: Sequence[KeypointSet], ids: np.ndarray, sims: np.ndarray
) -> np.ndarray:
    """One query's shortlist re-ranked by RANSAC inliers: ``ids [K] int64``, best first.

    database: keypoints of every database image (``ids`` index it); ids, sims: [K] the
    shortlist. More inliers first; the global similarity breaks ties.
    """
    inliers = np.array([ransac_inliers(query, database[int(i)]) for i in ids], dtype=np.float64)
    order = np.lexsort((-np.asarray(sims), -inliers))
    return np.asarray(ids)[order]

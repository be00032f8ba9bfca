"""Which first-stage global descriptor? Shortlist recall on the demo test split.

Builds (or reuses) the demo benchmark, extracts SIFT/RootSIFT once per image, fits every
codebook on the TRAIN split only, then ranks the test database by inner product for each option
and prints recall@10/50/100 (raw shortlist, junk counted as a slot), mAP and mP@10 (revisitop
"medium": junk removed), the descriptor size and the encoding time per image.

    python benchmarks/global_descriptor_choice.py [--cache-dir DIR] [--max-side 512]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from locore.runtime.demo.dataset import build_demo, default_cache_dir
from locore.runtime.global_descriptors import Codebook, color_histogram, mean_pool
from locore.runtime.images import load_image
from locore.runtime.metrics import compute_map, recall_at_k
from locore.runtime.shortlist import search_shortlist
from locore.runtime.sift import Keypoints, SiftExtractor

KS = (10, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None, help="demo cache (default ~/.cache/...)")
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--max-keypoints", type=int, default=1000)
    args = parser.parse_args()
    cache = args.cache_dir or default_cache_dir()

    train = build_demo(cache, "train")
    test = build_demo(cache, "test")
    print(f"train: {train}\ntest:  {test}")
    ext = SiftExtractor(max_side=args.max_side, max_keypoints=args.max_keypoints)

    t0 = time.perf_counter()
    train_kps = ext.detect_many(train.query_paths + train.db_paths)
    t_train = time.perf_counter() - t0
    test_paths = test.query_paths + test.db_paths
    t0 = time.perf_counter()
    test_kps = ext.detect_many(test_paths)
    t_test = time.perf_counter() - t0
    print(
        f"SIFT on {len(train_kps)} train images: {t_train:.1f} s; on {len(test_kps)} test "
        f"images: {t_test:.1f} s ({1000 * t_test / len(test_kps):.0f} ms/image, "
        f"max_side={args.max_side}); mean keypoints/test image "
        f"{np.mean([len(k) for k in test_kps]):.0f}"
    )
    test_images = [load_image(p) for p in test_paths]
    train_desc = [k.descriptors for k in train_kps]

    options: dict[str, Callable[[Keypoints, np.ndarray], np.ndarray]] = {
        "color HSV 8x4x4": lambda k, im: color_histogram(im),
        "mean RootSIFT": lambda k, im: mean_pool(k.descriptors),
    }
    for k in (32, 64, 128):
        t0 = time.perf_counter()
        book = Codebook.fit(train_desc, k, seed=0)
        print(f"k-means k={k}: {time.perf_counter() - t0:.1f} s")
        options[f"VLAD k={k}"] = lambda kp, im, b=book: b.encode(kp.descriptors)
    for k, dim in ((64, 128), (64, 256), (64, 512)):
        book = Codebook.fit(train_desc, k, seed=0, pca_dim=dim)
        options[f"VLAD k={k} PCAw {book.output_dim}"] = lambda kp, im, b=book: b.encode(
            kp.descriptors
        )

    nq = test.num_queries
    header = f"{'option':<24}{'dim':>6}" + "".join(f"{'R@' + str(k):>8}" for k in KS)
    header += f"{'mAP':>8}{'mP@10':>8}{'ms/img':>8}"
    print()
    print(header)
    print("-" * len(header))
    results = {}
    for name, fn in options.items():
        t0 = time.perf_counter()
        vecs = np.stack([fn(k, im) for k, im in zip(test_kps, test_images, strict=True)])
        ms = 1000 * (time.perf_counter() - t0) / len(vecs)
        ranks = search_shortlist(vecs[:nq], vecs[nq:], len(vecs) - nq).ids
        rec = recall_at_k(ranks, test.gnd, KS)
        m_ap, mp = compute_map(ranks, test.gnd, (10,))
        results[name] = (rec, m_ap)
        row = f"{name:<24}{vecs.shape[1]:>6}" + "".join(f"{100 * r:>8.1f}" for r in rec)
        row += f"{100 * m_ap:>8.1f}{100 * mp[0]:>8.1f}{ms:>8.2f}"
        print(row)
    best = max(results, key=lambda n: (results[n][0][1], results[n][1]))
    base = results["mean RootSIFT"]
    print(
        f"\nbest by recall@50 then mAP: {best}; recall@50 ratio to mean RootSIFT "
        f"{results[best][0][1] / max(base[0][1], 1e-9):.2f}x, mAP ratio "
        f"{results[best][1] / max(base[1], 1e-9):.2f}x"
    )


if __name__ == "__main__":
    main()

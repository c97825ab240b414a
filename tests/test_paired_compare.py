"""The paired comparison of two models: per-image differences and their bootstrap interval."""
from __future__ import annotations

import numpy as np

from benchmarks.studies.paired_compare import bootstrap_ci, compare


def test_paired_differences_match_by_name_and_count():
    a = [{"image": "x", "psnr": 20.0}, {"image": "y", "psnr": 25.0}, {"image": "z", "psnr": 30.0}]
    b = [{"image": "y", "psnr": 25.5}, {"image": "x", "psnr": 21.0}, {"image": "z", "psnr": 29.0}, {"image": "w", "psnr": 1}]
    r = compare(a, b)
    assert r["images"] == 3 and r["b_better"] == 2
    assert np.isclose(r["mean_diff"], 0.5 / 3) and r["worst_diff"] == -1.0 and r["per_image"]["x"] == 1.0
    assert r["ci95"][0] <= r["mean_diff"] <= r["ci95"][1]


def test_bootstrap_interval_excludes_zero_only_for_a_consistent_gain():
    rng = np.random.default_rng(1)
    lo, hi = bootstrap_ci(0.3 + 0.05 * rng.standard_normal(20))
    assert 0 < lo < 0.3 < hi
    lo, hi = bootstrap_ci(rng.standard_normal(20))
    assert lo < 0 < hi
    assert np.allclose(bootstrap_ci(np.full(5, 0.2)), 0.2)

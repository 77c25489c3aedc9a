"""Agreement between two feature sets, as the project judges fidelity to the reference.

Per feature, the |difference| on frames voiced (f0 > 0) in both; the voiced/unvoiced decision
on all frames. Thresholds: 95th percentile <= 0.005, 99th <= 0.02, V/UV >= 99.5%.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .analysis import FEATURE_NAMES

P95_MAX = 0.005
P99_MAX = 0.02
VUV_MIN = 0.995


@dataclass
class Agreement:
    frames: int
    jointly_voiced: int
    vuv: float  # fraction of frames with the same voiced/unvoiced decision
    p95: dict[str, float]
    p99: dict[str, float]

    @property
    def ok(self) -> bool:
        return self.vuv >= VUV_MIN and all(self.p95[k] <= P95_MAX for k in self.p95) and all(
            self.p99[k] <= P99_MAX for k in self.p99)

    def summary(self) -> str:
        worst95 = max(self.p95.values(), default=0.0)
        worst99 = max(self.p99.values(), default=0.0)
        return (f"{self.frames} frames, V/UV {self.vuv * 100:.2f}%, worst p95 {worst95:.2g}, "
                f"worst p99 {worst99:.2g}")


def agreement(ours: dict, expected: dict) -> Agreement:
    n = len(expected["f0"])
    if len(ours["f0"]) != n:
        raise ValueError(f"frame counts differ: {len(ours['f0'])} vs {n}")
    a_voiced = np.asarray(ours["f0"]) > 0
    b_voiced = np.asarray(expected["f0"]) > 0
    both = a_voiced & b_voiced
    p95, p99 = {}, {}
    for name in FEATURE_NAMES:
        diff = np.abs(np.asarray(ours[name], float)[both] - np.asarray(expected[name], float)[both])
        p95[name] = float(np.percentile(diff, 95)) if diff.size else 0.0
        p99[name] = float(np.percentile(diff, 99)) if diff.size else 0.0
    vuv = float(np.mean(a_voiced == b_voiced)) if n else 1.0
    return Agreement(n, int(both.sum()), vuv, p95, p99)

"""The most probable network under a latency window, as a 0-1 integer program.

A derivation chooses binary decisions (keep this connection, run that op, keep that cell) whose
log-probabilities and latencies add up. With the structural rules of a space written as linear
constraints, "the most probable network whose predicted latency lies in [lo, hi]" is

    maximise  score . x   subject to   rows_lo <= rows @ x <= rows_hi,
                                        lo <= fixed_ms + latency . x <= hi,   x in {0, 1}^n

solved exactly (zero optimality gap) by HiGHS through ``scipy.optimize.milp``: a well-kept
branch-and-cut solver instead of a search written here. The same program with latency as the
objective gives the fastest and the slowest network of the space.

The solver satisfies constraints to a tolerance of about 1e-7; callers price the decoded
network with the latency table and tighten the window by what the tolerance let through
(``solve_priced``), so whatever is returned lies in the window by the table's own sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class BinaryProgram:
    latency: np.ndarray  # ms each variable adds when 1
    score: np.ndarray  # log-probability each variable adds when 1
    rows: list[tuple[dict[int, float], float, float]]  # structural constraints: ({var: coef}, lo, hi)
    lower: np.ndarray  # per-variable bounds (1 where a decision is forced)
    upper: np.ndarray
    fixed_ms: float = 0.0  # the latency every network pays (stem, output block, calibration offset)
    fixed_score: float = 0.0  # the log-probability every network carries

    def _solve(self, objective: np.ndarray, lo_ms: float, hi_ms: float) -> np.ndarray | None:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_array

        n = len(self.latency)
        r, c, v = [], [], []
        for i, (coefs, _, _) in enumerate(self.rows):
            r += [i] * len(coefs)
            c += list(coefs)
            v += list(coefs.values())
        constraints = [LinearConstraint(self.latency[None, :], lo_ms - self.fixed_ms, hi_ms - self.fixed_ms)]
        if self.rows:
            matrix = coo_array((v, (r, c)), shape=(len(self.rows), n)).tocsr()
            constraints.append(LinearConstraint(matrix, [lo for _, lo, _ in self.rows], [hi for _, _, hi in self.rows]))
        result = milp(objective, constraints=constraints, integrality=np.ones(n), bounds=Bounds(self.lower, self.upper),
                      options={"mip_rel_gap": 0.0, "presolve": True})
        if result.status != 0 or result.x is None:  # 2: infeasible (other codes cannot occur without limits)
            return None
        return np.round(result.x).astype(bool)

    def most_probable(self, lo_ms: float, hi_ms: float) -> np.ndarray | None:
        """The decisions of the most probable network with latency in [lo_ms, hi_ms], or None."""
        return self._solve(-self.score, lo_ms, hi_ms)

    def extreme(self, fastest: bool) -> np.ndarray:
        """The decisions of the fastest (or slowest) network of the space."""
        x = self._solve(self.latency if fastest else -self.latency, -np.inf, np.inf)
        assert x is not None, "every space holds at least one network"
        return x

    def solve_priced(self, lo_ms: float, hi_ms: float, decode: Callable[[np.ndarray], T],
                     price: Callable[[T], float]) -> T | None:
        """``most_probable`` decoded and priced exactly; the window is narrowed by any excess that
        the solver's tolerance let through, until the priced network lies inside it."""
        lo, hi = lo_ms, hi_ms
        for _ in range(4):
            x = self.most_probable(lo, hi)
            if x is None:
                return None
            network = decode(x)
            ms = price(network)
            if lo_ms <= ms <= hi_ms:
                return network
            slack = max(abs(ms) * 1e-12, 1e-12)
            hi = hi - (ms - hi_ms) - slack if ms > hi_ms else hi
            lo = lo + (lo_ms - ms) + slack if ms < lo_ms else lo
        return None

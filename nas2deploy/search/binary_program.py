"""The most probable network under a latency window, as a 0-1 integer program.

A derivation chooses binary decisions (keep this connection, run that op, keep that cell) whose
log-probabilities and latencies add up. With the structural rules of a space written as linear
constraints, "the most probable network whose predicted latency lies in [lo, hi]" is

    maximise  score . x   subject to   rows_lo <= rows @ x <= rows_hi,
                                        lo <= fixed_ms + latency . x <= hi,   x in {0, 1}^n

solved exactly (zero optimality gap) by HiGHS through ``scipy.optimize.milp``: a well-kept
branch-and-cut solver instead of a search written here. The same program with latency as the
objective gives the fastest and the slowest network of the space.

The solver satisfies constraints to an absolute 1e-6, so its own latency sum can put a network
just inside a window that the table's sum puts just outside. ``solve_priced`` therefore solves
over the window widened by the caller's tolerance (``search.budget.Window``), prices the decoded
network with the table, and, when that price lies outside, excludes exactly that network (a
no-good cut: at least one decision must differ) and solves again. Each round removes one network
the solver's tolerance let in, so the answer is the most probable network inside the window by
the table's own sum; narrowing the window instead would either stall (a step below the solver's
tolerance returns the same network) or cut off networks that fit. Ties in log p go to whichever
optimum HiGHS returns first, the same for the same program (HiGHS is deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np

from nas2deploy.errors import UserError

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

    def _solve(self, objective: np.ndarray, lo_ms: float, hi_ms: float,
               excluded: tuple[np.ndarray, ...] = ()) -> np.ndarray | None:
        try:
            from scipy.optimize import Bounds, LinearConstraint, milp
            from scipy.sparse import coo_array
        except ImportError:
            raise UserError("derivation under a latency budget solves a 0-1 program with HiGHS, which comes "
                            "with scipy: pip install 'scipy>=1.9'") from None

        n = len(self.latency)
        r, c, v = [], [], []
        # a no-good cut per excluded decision vector x0: sum over x0's ones of (1 - x) + sum over its zeros of x >= 1
        cuts = [({int(i): (1.0 if x0[i] else -1.0) for i in range(n)}, -np.inf, float(x0.sum()) - 1.0) for x0 in excluded]
        rows = self.rows + cuts
        for i, (coefs, _, _) in enumerate(rows):
            r += [i] * len(coefs)
            c += list(coefs)
            v += list(coefs.values())
        constraints = [LinearConstraint(self.latency[None, :], lo_ms - self.fixed_ms, hi_ms - self.fixed_ms)]
        if rows:
            matrix = coo_array((v, (r, c)), shape=(len(rows), n)).tocsr()
            constraints.append(LinearConstraint(matrix, [lo for _, lo, _ in rows], [hi for _, _, hi in rows]))
        result = milp(objective, constraints=constraints, integrality=np.ones(n), bounds=Bounds(self.lower, self.upper),
                      options={"mip_rel_gap": 0.0, "presolve": True})
        if result.status != 0 or result.x is None:  # 2: infeasible (other codes cannot occur without limits)
            return None
        return np.round(result.x).astype(bool)

    def extreme(self, fastest: bool) -> np.ndarray:
        """The decisions of the fastest (or slowest) network of the space."""
        x = self._solve(self.latency if fastest else -self.latency, -np.inf, np.inf)
        assert x is not None, "every space holds at least one network"
        return x

    def solve_priced(self, lo_ms: float, hi_ms: float, tolerance_ms: float, decode: Callable[[np.ndarray], T],
                     price: Callable[[T], float], max_cuts: int = 1000) -> T | None:
        """The most probable network whose ``price`` lies in [lo_ms - tolerance, hi_ms + tolerance],
        or None when no network does."""
        lo, hi = lo_ms - tolerance_ms, hi_ms + tolerance_ms
        excluded: list[np.ndarray] = []
        while len(excluded) <= max_cuts:
            x = self._solve(-self.score, lo, hi, tuple(excluded))
            if x is None:
                return None
            network = decode(x)
            if lo <= price(network) <= hi:
                return network
            excluded.append(x)
        raise RuntimeError(f"{max_cuts} networks in a row priced outside [{lo!r}, {hi!r}] ms by the table but inside "
                           "by the solver: the table's latencies are not finite sums")

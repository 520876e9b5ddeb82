"""The rules of a latency budget that every derivation shares.

``DEFAULT_FILL`` (0.9): derivation returns the most probable network whose predicted latency
lies in ``[fill x budget, budget]``. A user who gives a budget wants the most accurate network
within it, and latency buys accuracy; a search short enough to run on a CPU leaves alpha and
beta close to uniform, and then the most probable network overall sits well under a loose
budget (0.80x of it in the budget sweep with ``fill=0``). ``fill=0`` is the plain
most-probable-within-budget derivation.

``Window``: one rule for "this network lies in the window" that every derivation, its refusal
and its tests share. Predicted latencies are sums of table entries, and two sums of the same
entries in another order differ in the last bits; the 0-1 programs are solved by HiGHS, which
satisfies a constraint to an absolute 1e-6. A budget copied from a network's own latency must
admit that network, so the window's edges are widened by ``TOLERANCE`` x max(1, budget) ms
(1 ns at a 1 ms budget, far below any timing's resolution) and every latency is compared after
pricing the decoded network with the table (``LatencyTable.predict``), never by the solver's own
sum.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas2deploy.errors import UserError

DEFAULT_FILL = 0.9
TOLERANCE = 1e-6  # HiGHS's MIP feasibility tolerance, relative to budgets above 1 ms


@dataclass(frozen=True)
class Window:
    """Latencies in ``[fill x budget, budget]``, edges widened by ``tolerance_ms``."""

    budget_ms: float
    fill: float = DEFAULT_FILL

    @property
    def tolerance_ms(self) -> float:
        return TOLERANCE * max(1.0, self.budget_ms)

    @property
    def lo_ms(self) -> float:
        return self.fill * self.budget_ms

    def fits(self, ms: float) -> bool:
        """Within the budget (the window's upper edge)."""
        return ms <= self.budget_ms + self.tolerance_ms

    def contains(self, ms: float) -> bool:
        return self.lo_ms - self.tolerance_ms <= ms <= self.budget_ms + self.tolerance_ms


def check_budget(budget_ms: float, fill: float) -> None:
    """Refuse a budget that is not a positive number and a fill outside [0, 1]."""
    if not budget_ms > 0:
        raise UserError(f"--budget-ms must be positive, got {budget_ms:g}")
    if not 0 <= fill <= 1:
        raise UserError(f"--fill must lie in [0, 1], got {fill:g}")

"""The rules of a latency budget that every derivation shares.

``DEFAULT_FILL`` (0.9): derivation returns the most probable network whose predicted latency
lies in ``[fill x budget, budget]``. A user who gives a budget wants the most accurate network
within it, and latency buys accuracy; a search short enough to run on a CPU leaves alpha and
beta close to uniform, and then the most probable network overall sits well under a loose
budget (0.80x of it in the budget sweep with ``fill=0``). ``fill=0`` is the plain
most-probable-within-budget derivation.
"""

from __future__ import annotations

from nas2deploy.errors import UserError

DEFAULT_FILL = 0.9


def check_budget(budget_ms: float, fill: float) -> None:
    """Refuse a budget that is not a positive number and a fill outside [0, 1]."""
    if not budget_ms > 0:
        raise UserError(f"--budget-ms must be positive, got {budget_ms:g}")
    if not 0 <= fill <= 1:
        raise UserError(f"--fill must lie in [0, 1], got {fill:g}")

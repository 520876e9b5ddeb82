"""Closed-loop derivation: derive under the budget, measure the network on the table's device,
and move the target until the measured latency lies in ``[fill * budget, budget]``.

A budget-constrained optimum tends to pick the ops whose isolated timing flatters them most, so
its measured latency can exceed a prediction that is accurate on random networks (a few percent
over on the tightest budgets). Where the table's device is at hand, measuring settles it: each
round scales the derivation target by ``AIM * budget / measured``, which converges in one or two
rounds. After a network measured over the budget it is the network's own prediction that is
scaled, not the target: a network predicted well under its target but measured over the budget
would otherwise fit the scaled target again and be derived again, and the loop would stop with
nothing new to measure. ``AIM`` (0.98) aims 2% under the budget: a network whose latency is
proportional to the target would otherwise land exactly on the budget after one round, and
timing noise (2-3% on a CPU) would decide. A measurement over the budget is repeated and the
lower median kept: a passing disturbance would otherwise send the derivation to a needlessly
smaller network. A network that fits but measures under the window (the table over-predicting
it) moves the target up the same way, so the network uses the budget it was given; the largest
one measured within the budget is returned when the rounds run out or the network stops
changing. When no network has fitted by then (or the tightened target falls below the fastest
prediction), the fastest network of the space is measured before giving up: the table may
over-predict it, and it may fit.

Every measurement is checked before it steers anything: a latency must be finite and positive
(a runner that reports 0, a negative or NaN time is broken, and would otherwise divide by zero,
fit any budget or aim at a NaN target); one line names the runner, the network and the value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from nas2deploy.errors import UserError
from nas2deploy.latency.measure import measure_network, settings_from_table, timing_from_table
from nas2deploy.latency.table import LatencyTable
from nas2deploy.nets import Network
from nas2deploy.search.budget import DEFAULT_FILL
from nas2deploy.search.interface import SpaceSearch

AIM = 0.98


@dataclass(frozen=True)
class Verified:
    arch: Network
    measured_ms: float
    predicted_ms: float
    target_ms: float
    rounds: int


def table_device_measure(table: LatencyTable, name: str = "derived") -> Callable[[Network], float]:
    """Measure a whole network on the table's own device, with its backend and harness; refuses
    when this machine is not that device."""
    settings = settings_from_table(table)
    timing = timing_from_table(table)
    return lambda arch: measure_network(settings, arch, timing, name)


def checked(measure: Callable[[Network], float], runner: str) -> Callable[[Network], float]:
    """``measure`` refusing any value that is not a finite positive number of milliseconds."""

    def run(arch: Network) -> float:
        value = measure(arch)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise UserError(f"{runner} measured {arch.name} at {value!r} ms: a latency must be a finite positive "
                            "number; check the runner")
        return float(value)

    return run


def derive_measured(
    searched: SpaceSearch, budget_ms: float, max_rounds: int = 4, name: str = "derived",
    say: Callable[[str], None] | None = None, fill: float = DEFAULT_FILL, measure: Callable[[Network], float] | None = None,
    runner: str = "", **options: Any,
) -> Verified:
    """The most probable architecture whose *measured* latency lies in ``[fill * budget, budget]``,
    or the largest measured one that fits when ``max_rounds`` do not reach the window.
    ``measure`` times a network (ms); by default on the table's device (tests script it), and
    ``runner`` names it in errors; ``options`` go to the space's derivation (DCNAS: ``viterbi``)."""
    if not (isinstance(max_rounds, int) and max_rounds >= 1):
        raise UserError(f"the closed loop needs at least one round of measurement, got max_rounds={max_rounds!r}")
    table = searched.latency_model.table
    if measure is None:
        m = table.measurement
        runner = runner or f"the {m.get('backend')} runner on {m.get('device')}"
        measure = table_device_measure(table, name)
    measure = checked(measure, runner or "the measurement")
    target, measured = budget_ms, float("nan")
    best: Verified | None = None
    seen: set[str] = set()
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        try:
            arch = searched.derive(name, target, fill, **options)
        except UserError:  # the target fell below the fastest prediction
            break
        key = json.dumps(arch.to_dict(), sort_keys=True)
        if key in seen:  # the target moved but the network did not: nothing new to measure
            break
        seen.add(key)
        measured = measure(arch)
        if measured > budget_ms:  # disturbances only ever slow a run down: confirm before tightening
            measured = min(measured, measure(arch))
        predicted = table.predict(arch).best_ms
        if say:
            say(f"round {rounds}: target {target:.4f} ms, predicted {predicted:.4f} ms, measured {measured:.4f} ms")
        if measured <= budget_ms:
            if best is None or measured > best.measured_ms:
                best = Verified(arch, measured, predicted, target, rounds)
            if measured >= fill * budget_ms:
                return best
        # over the budget: below this network's own prediction, so it cannot be derived again;
        # under the window: up from the target, which the fill window is relative to
        target = (predicted if measured > budget_ms else target) * AIM * budget_ms / measured
    if best is not None:
        return best
    return _fastest_or_refuse(searched, budget_ms, name, say, measure, seen, rounds, measured, options)


def _fastest_or_refuse(searched: SpaceSearch, budget_ms: float, name: str, say: Callable[[str], None] | None,
                       measure: Callable[[Network], float], seen: set[str], rounds: int, last_ms: float,
                       options: dict[str, Any]) -> Verified:
    """The fastest network of the space, measured, when it fits; else the refusal."""
    fastest_ms = searched.fastest_ms()
    fastest = searched.derive(name, fastest_ms, 0.0, **options)
    if json.dumps(fastest.to_dict(), sort_keys=True) not in seen:
        measured = measure(fastest)
        if measured > budget_ms:
            measured = min(measured, measure(fastest))
        if say:
            say(f"the fastest network: predicted {fastest_ms:.4f} ms, measured {measured:.4f} ms")
        if measured <= budget_ms:
            return Verified(fastest, measured, fastest_ms, fastest_ms, rounds + 1)
        last_ms = measured
    raise UserError(
        f"no network of the space measured within {budget_ms:g} ms: after {rounds} round(s) the fastest network "
        f"of the space measured {last_ms:.3f} ms (predicted {fastest_ms:.3f} ms)"
    )

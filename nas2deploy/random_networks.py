"""Random networks of a latency window: the baseline a search has to beat.

``sample_window`` draws networks with the space's own sampler (``SearchSpace.sample_arch``:
DenseNAS takes each block's out-edge and each layer's op uniformly; DCNAS each cell's inputs and
op uniformly) and keeps the distinct ones whose predicted latency (calibrated where the table
is, as derivation predicts) lies in [fill x budget, budget]. Rejection sampling: the kept
networks follow the sampler's distribution restricted to the window, which is what "a random
network of this latency" means to a user of the space; it is not uniform over the window's
distinct networks (DenseNAS paths with more blocks are drawn less often, as they are by the
sampler). A window outside the reachable latency range is refused with that range; sampling
stops after ``max_tries`` draws and says how many networks it found.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas2deploy.errors import UserError
from nas2deploy.fileio import refuse_link
from nas2deploy.nets import Network, save_arch
from nas2deploy.latency.table import LatencyTable
from nas2deploy.runs import prepare, resolve, space_for
from nas2deploy.search.config import SearchConfig, provenance
from nas2deploy.spaces.base import SearchSpace
from nas2deploy.spaces.tables import load_table, table_space

#: Draws per requested network before sampling gives up (a window holding 1 network in 10^4
#: draws still yields 5 networks most of the time).
TRIES_PER_NETWORK = 20_000


@dataclass
class WindowSample:
    networks: list[Network]
    tries: int
    window_ms: tuple[float, float]
    reachable_ms: tuple[float, float]


@dataclass
class Window:
    """What sampling a window needs: the configuration (for provenance), the table, the space
    narrowed as a search narrows it, and the latencies it reaches."""

    config: SearchConfig
    table: LatencyTable
    space: SearchSpace
    reachable_ms: tuple[float, float]


def _window(table_path: str, space_name: str | None = None, space_config: dict[str, Any] | None = None) -> Window:
    """The table's space, narrowed by ``space_config`` as a search narrows it, and its exact
    reachable range (the space's own, or its search's derivation's); ``space_name``, where
    given, must be the space the table was profiled for."""
    table = load_table(table_path)
    name = table_space(table).name
    if space_name is not None and space_name != name:
        raise UserError(f"latency table {table_path} was profiled for space {name!r}, not {space_name!r}")
    config = resolve(SearchConfig(table=table_path, space=name, space_config=dict(space_config or {})))
    space = space_for(table, name, config.space_config)
    reach = space.latency_range(table)
    if reach is None:
        prepared = prepare(config, table)
        return Window(prepared.config, prepared.table, prepared.space, prepared.space_search.latency_range())
    return Window(config, table, space, reach)


def reachable_ms(table_path: str, space_config: dict[str, Any] | None = None) -> tuple[float, float]:
    """The predicted latencies of the fastest and the slowest network of the table's space."""
    return _window(table_path, space_config=space_config).reachable_ms


def sample_window(table_path: str, budget_ms: float, fill: float, count: int, seed: int,
                  max_tries: int | None = None, space_name: str | None = None,
                  space_config: dict[str, Any] | None = None) -> WindowSample:
    """Up to ``count`` distinct random networks predicted within [fill x budget, budget], drawn
    from the table's space narrowed by ``space_config`` (the search's own ``space_config``: a
    baseline drawn from a larger space than the search's would not answer whether it chose well)."""
    window = _window(table_path, space_name, space_config)
    table, space = window.table, window.space
    fastest, slowest = window.reachable_ms
    low, high = fill * budget_ms, budget_ms
    if high < fastest or low > slowest:
        raise UserError(f"--budget-ms {budget_ms:g} with --fill {fill:g}: the window [{low:.4g}, {high:.4g}] ms "
                        f"holds no network of this space; with table {table.name} it reaches "
                        f"{fastest:.4g}-{slowest:.4g} ms")
    rng = random.Random(seed)
    seen: set[Network] = set()  # networks compare without their meta; the name is blanked
    found: list[Network] = []
    limit = max_tries or TRIES_PER_NETWORK * count
    tries = 0
    meta = {**provenance(window.config, budget_ms), "fill": fill, "sampler": "rejection", "seed": seed}
    while len(found) < count and tries < limit:
        tries += 1
        arch = space.sample_arch(rng)
        if low <= table.predict(arch).best_ms <= high and (body := arch.renamed("")) not in seen:
            seen.add(body)
            found.append(arch.renamed(f"random-{len(found):03d}").with_meta(meta))
    return WindowSample(found, tries, (low, high), (fastest, slowest))


def write_sample(sample: WindowSample, out: str | Path) -> list[Path]:
    """The networks as ``OUT/random-NNN.json``; nothing is written outside ``out``."""
    folder = refuse_link(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for arch in sample.networks:
        path = folder / f"{arch.name}.json"
        save_arch(arch, path)
        paths.append(path)
    return paths

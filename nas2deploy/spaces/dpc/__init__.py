"""DPC (segmentation): dense prediction cells on a fixed backbone at output stride 16, in one
package: ``space.py`` the space (the 81 ops per branch, sampling cells, what to profile);
``proxy.py`` the cached-feature proxy (features cached once, cells trained on them);
``study.py`` the black-box search on Optuna, which ``search --space dpc`` runs; the network kind
is ``nets.dpc.DPCNet``. ``ENTRY`` registers it under the name ``dpc``: ``space info``, ``space
sample``, ``profile`` and ``lut validate`` work for it as for the other spaces.
"""

from __future__ import annotations

from typing import Any, Callable

from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.search.interface import SpaceSearch
from nas2deploy.spaces.base import SpaceEntry, SpaceOption
from nas2deploy.spaces.dpc.space import DPCConfig, DPCSpace


def no_differentiable_search(space: Any, table: LatencyTable, options: dict[str, Any]) -> SpaceSearch:
    """DPC is not searched by the supernet loop (``search --space dpc`` runs ``study`` instead)."""
    raise UserError("the dpc space has no differentiable search: it is searched black-box on a cached-feature proxy "
                    "(nas2deploy search --space dpc --weights W --budget-ms X --trials N)")


def study(table: LatencyTable, space: Any, say: Callable[[str], None] | None = None, **options: Any) -> dict[str, Any]:
    """``nas2deploy search --space dpc``: ``space`` (the table's, narrowed by the command's space
    options) searched by ``study.search_cells`` with ``options`` (``CellSearch`` fields)."""
    from nas2deploy.spaces.dpc.study import CellSearch, search_cells

    assert isinstance(space, DPCSpace), "the registry hands a dpc entry its own space"
    return search_cells(CellSearch(table=str(table.path), **options), space, table, say)


ENTRY = SpaceEntry(
    name="dpc",
    task="segmentation",
    config_class=DPCConfig,
    make=DPCSpace,
    make_search=no_differentiable_search,
    study=study,
    builtin_data="seg-synthetic",
    options=(
        SpaceOption("backbone", "str", "shipped classification chain run at output stride 16 (mobilenetv2)"),
        SpaceOption("input_size", "int", "input height (513)", low=128),
        SpaceOption("input_width", "int", "input width (1025)", low=128),
        SpaceOption("branches", "int", "branches of a cell (5)", low=1, high=16),
        SpaceOption("num_classes", "int", "segmentation classes (19)", low=1),
    ),
)

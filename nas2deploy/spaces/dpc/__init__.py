"""DPC (segmentation): dense prediction cells on a fixed backbone at output stride 16, in one
package: ``space.py`` the space (the 81 ops per branch, sampling cells, what to profile);
``proxy.py`` the cached-feature proxy (features cached once, cells trained on them);
``study.py`` the black-box search on Optuna (no command yet); the network kind is
``nets.dpc.DPCNet``. ``ENTRY`` registers it under the name ``dpc``: ``space info``, ``space
sample``, ``profile`` and ``lut validate`` work for it. It has no differentiable search, and
``search --space dpc`` says so.
"""

from __future__ import annotations

from typing import Any

from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable
from nas2deploy.search.interface import SpaceSearch
from nas2deploy.spaces.base import SpaceEntry, SpaceOption
from nas2deploy.spaces.dpc.space import DPCConfig, DPCSpace


def no_differentiable_search(space: Any, table: LatencyTable, options: dict[str, Any]) -> SpaceSearch:
    """DPC is not searched by the supernet loop: say so, before any work."""
    raise UserError("the dpc space has no differentiable search: it is searched black-box on a cached-feature proxy, "
                    "whose command is not built yet (issue 15); profile, sample and validate work for it")


ENTRY = SpaceEntry(
    name="dpc",
    task="segmentation",
    config_class=DPCConfig,
    make=DPCSpace,
    make_search=no_differentiable_search,
    builtin_data="seg-synthetic",
    options=(
        SpaceOption("backbone", "str", "shipped classification chain run at output stride 16 (mobilenetv2)"),
        SpaceOption("input_size", "int", "input height (513)", low=128),
        SpaceOption("input_width", "int", "input width (1025)", low=128),
        SpaceOption("branches", "int", "branches of a cell (5)", low=1, high=16),
        SpaceOption("num_classes", "int", "segmentation classes (19)", low=1),
    ),
)

"""DCNAS (segmentation): the densely connected cell grid, in one package.

``space.py`` the space and its configuration; ``supernet.py`` the supernet with its fusion
modules (path sampling) and mixture layers (channel sampling); ``latency_model.py`` its
differentiable expected latency; ``derive.py`` top-k, Viterbi and the exact budget derivation;
``search.py`` what the search loop runs each step; ``plots.py`` the report's heatmaps. ``ENTRY``
registers all of it under the name ``dcnas``; the modules are imported when the space is first
used.
"""

from __future__ import annotations

from typing import Any

from nas2deploy.spaces.entry import DemoPlan, SpaceEntry, SpaceOption, SpaceParts

#: Connections run per cell and step (DCNAS's path sampling), the share of a cell's channels
#: through the candidate ops (its channel sampling), and top-k derivation rather than Viterbi.
PATH_SAMPLES, CHANNEL_FRACTION = 2, 0.25
SEARCH_DEFAULTS: dict[str, Any] = {"path_samples": PATH_SAMPLES, "channel_fraction": CHANNEL_FRACTION, "viterbi": False}


def parts() -> SpaceParts:
    from nas2deploy.spaces.dcnas.plots import search_plots
    from nas2deploy.spaces.dcnas.search import DCNASSearch
    from nas2deploy.spaces.dcnas.space import DCNASConfig, DCNASSpace

    return SpaceParts(DCNASConfig, DCNASSpace, DCNASSearch, search_plots)  # type: ignore[arg-type]


ENTRY = SpaceEntry(
    name="dcnas",
    task="segmentation",
    builtin_data="seg-synthetic",
    parts=parts,
    options=(
        SpaceOption("input_size", "int", "input resolution (512)", low=64),
        SpaceOption("num_classes", "int", "segmentation classes (19)", low=1),
        SpaceOption("layers", "int", "layers of the cell grid (12)", low=1, high=32),
        SpaceOption("base_width", "int", "width at 1/4, doubled per scale (32)", low=1),
        SpaceOption("max_back", "int", "earlier layers a cell may take inputs from (0: all)", low=0),
        SpaceOption("derive_inputs", "int", "strongest inputs each derived cell keeps (2)", low=1),
        SpaceOption("path_samples", "int", "connections run per cell and step (0: all; default 2)", ("search",), low=0),
        SpaceOption("channel_fraction", "float", "share of a cell's channels through the candidate ops (0.25; 1 with "
                    "--strategy evolution)", ("search",),
                    low=0, high=1),
        SpaceOption("viterbi", "flag", "derive the single best scale path instead of each cell's top inputs",
                    ("search", "derive")),
    ),
    search_defaults=SEARCH_DEFAULTS,
    one_shot_defaults={"channel_fraction": 1.0},
    # 64 px scenes, a 6-layer grid of widths 32..256 (21 cells, 129 connections): the same shape
    # of search at a size a CPU runs in about a minute (32 ops to profile).
    demo=DemoPlan(
        {"input_size": 64, "layers": 6, "base_width": 32, "num_classes": 6, "head_width": 32},
        "seg-synthetic:400", "dcnas64_small_ort_cpu.json", None,
        {"epochs": 6, "warmup_epochs": 2, "batch_size": 16, "max_batches": 8, "a_lr": 3e-3, "w_lr": 0.05}, 20, 16, 0.1,
        # the fixed output block is most of a small DCNAS network's latency: the derivation's
        # networks span only ~1.4x, so the budget sits 60% of the way up that range
        lambda fastest, slowest: fastest + 0.6 * (slowest - fastest)),
)

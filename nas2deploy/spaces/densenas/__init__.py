"""DenseNAS (classification): the MobileNetV2-based space as published, in one package.

``space.py`` the space and its configuration; ``supernet.py`` the supernet with alpha and beta;
``latency_model.py`` its differentiable expected latency; ``derive.py`` Viterbi and budget
derivation; ``search.py`` what the search loop runs each step; ``plots.py`` the report's
heatmaps. ``ENTRY`` registers all of it under the name ``densenas``; the modules are imported
when the space is first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas2deploy.spaces.entry import DemoPlan, SpaceEntry, SpaceOption, SpaceParts

#: The search options and their defaults: candidates share the largest one's weights unless
#: ``separate_op_weights`` (as published).
SEARCH_DEFAULTS: dict[str, Any] = {"separate_op_weights": False}


def parts() -> SpaceParts:
    from nas2deploy.spaces.densenas.plots import search_plots
    from nas2deploy.spaces.densenas.search import DenseNASSearch
    from nas2deploy.spaces.densenas.space import DenseNASConfig, DenseNASSpace

    return SpaceParts(DenseNASConfig, DenseNASSpace, DenseNASSearch, search_plots)  # type: ignore[arg-type]


ENTRY = SpaceEntry(
    name="densenas",
    task="classification",
    builtin_data="synthetic",
    parts=parts,
    options=(
        SpaceOption("input_size", "int", "input resolution (224: ImageNet strides; below 128: CIFAR strides)", low=32),
        SpaceOption("width_mult", "float", "scale every width (multiples of 8)", low=0, high=4),
        SpaceOption("num_classes", "int", "classifier outputs", low=1),
        SpaceOption("max_stack_layers", "int", "stacking layers per block (3)", low=0, high=3),
        SpaceOption("separate_op_weights", "flag", "independent weights per candidate op, as published (default: "
                    "candidates share the largest one's weights)", ("search",)),
    ),
    search_defaults=SEARCH_DEFAULTS,
    # The demo's space has no stacking layers: with one per block the supernet is twice as deep
    # and its argmax network stayed at 13-16% top-1 after 150 weight steps, without them it
    # reaches 39% (benchmarks/supernet_learning.py); the search still chooses every block's route
    # and head op. 9 epochs (3 of weight warm-up) of 18 batches of 32 per pass, and a faster
    # architecture learning rate than the paper's 3e-4 so that so few steps move it.
    demo=DemoPlan(
        {"input_size": 32, "width_mult": 0.5, "num_classes": 10, "max_stack_layers": 0},
        "synthetic", "densenas32_small_c10_ort_cpu.json",
        Path(__file__).parents[3] / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json",
        {"epochs": 9, "warmup_epochs": 3, "batch_size": 32, "max_batches": 18, "a_lr": 3e-2, "w_lr": 0.05}, 5, 64, 0.05,
        lambda fastest, slowest: 1.7 * fastest),  # the small DenseNAS space spans 0.2-2.1 ms
)

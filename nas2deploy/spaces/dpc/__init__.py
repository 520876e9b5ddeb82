"""DPC (segmentation): dense prediction cells on a fixed backbone at output stride 16, in one
package: ``space.py`` the space (the 81 ops per branch, sampling cells, what to profile);
``proxy.py`` the cached-feature proxy (features cached once, cells trained on them);
``study.py`` its side of the black-box search (how a trial draws a cell, what scores it), which
``search --space dpc`` runs; the network kind is ``nets.dpc.DPCNet``. ``ENTRY`` registers it
under the name ``dpc``: ``space info``, ``space sample``, ``profile`` and ``lut validate`` work for
it as for the other spaces.
"""

from __future__ import annotations

from nas2deploy.spaces.entry import SpaceEntry, SpaceOption, SpaceParts


def parts() -> SpaceParts:
    from nas2deploy.spaces.dpc.space import DPCConfig, DPCSpace
    from nas2deploy.spaces.dpc.study import DPCCells

    return SpaceParts(DPCConfig, DPCSpace, study=DPCCells())


ENTRY = SpaceEntry(
    name="dpc",
    task="segmentation",
    builtin_data="seg-synthetic",
    parts=parts,
    searched_by="trials",
    options=(
        SpaceOption("backbone", "str", "shipped classification chain run at output stride 16 (mobilenetv2)"),
        SpaceOption("input_size", "int", "input height (513)", low=128),
        SpaceOption("input_width", "int", "input width (1025)", low=128),
        SpaceOption("branches", "int", "branches of a cell (5)", low=1, high=16),
        SpaceOption("num_classes", "int", "segmentation classes (19)", low=1),
        SpaceOption("weights", "str", "weights of the backbone (a classification chain) or of a DPC network on it",
                    ("study",), required=True),
        SpaceOption("proxy_epochs", "int", "epochs a cell trains on the cached features", ("study",), low=1, default=10),
    ),
)

"""Search-space registry: a space is found by name and rebuilt from the config a table stores."""

from __future__ import annotations

import dataclasses
from typing import Any

from nas2deploy.errors import UserError
from nas2deploy.spaces.base import SearchSpace
from nas2deploy.spaces.dcnas import DCNASConfig, DCNASSpace
from nas2deploy.spaces.densenas import DenseNASConfig, DenseNASSpace

SPACES: dict[str, tuple[type[SearchSpace], type]] = {
    "densenas": (DenseNASSpace, DenseNASConfig),
    "dcnas": (DCNASSpace, DCNASConfig),
}


#: Config fields that ``nas2deploy profile`` / ``space info`` take as options (--input-size, ...).
OPTION_FIELDS = ("input_size", "width_mult", "num_classes", "max_stack_layers", "layers", "base_width", "max_back",
                 "derive_inputs")


def space_overrides(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The set (not None) OPTION_FIELDS of ``given``; one that space ``name`` lacks is refused by name."""
    if name not in SPACES:
        raise UserError(f"unknown search space {name!r}; valid spaces: {', '.join(SPACES)}")
    known = {f.name for f in dataclasses.fields(SPACES[name][1])}
    options = {k: given[k] for k in OPTION_FIELDS if given.get(k) is not None}
    for option in options:
        if option not in known:
            raise UserError(f"--{option.replace('_', '-')} does not apply to the {name} space")
    return options


def make_space(name: str, config: dict[str, Any] | None = None) -> SearchSpace:
    """Build space ``name`` from a config dict (CLI options or a table's metadata)."""
    if name not in SPACES:
        raise UserError(f"unknown search space {name!r}; valid spaces: {', '.join(SPACES)}")
    space_cls, config_cls = SPACES[name]
    try:
        cfg = config_cls(**(config or {}))
    except TypeError as exc:
        raise UserError(f"search space {name}: bad configuration ({exc})") from None
    return space_cls(cfg)  # type: ignore[call-arg]


__all__ = ["OPTION_FIELDS", "SPACES", "SearchSpace", "make_space", "space_overrides"]

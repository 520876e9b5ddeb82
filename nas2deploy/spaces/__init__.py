"""Search-space registry: a space is found by name and rebuilt from the config a table stores."""

from __future__ import annotations

import dataclasses
from typing import Any

from nas2deploy.errors import UserError
from nas2deploy.spaces.base import SearchSpace
from nas2deploy.spaces.dcnas import DCNASConfig, DCNASSpace
from nas2deploy.spaces.densenas import DenseNASConfig, DenseNASSpace
from nas2deploy.validate import Field

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


#: How a config field's annotation is read from JSON (strictly: a bool is not a number).
_READERS = {
    "int": lambda f: f.int(-(2**31), 2**31),
    "float": lambda f: f.number(),
    "bool": lambda f: f.bool(),
    "str": lambda f: f.str(),
    "tuple[int, ...] | None": lambda f: tuple(v.int(-(2**31), 2**31) for v in f.list(max_len=64)),
    "tuple[str, ...]": lambda f: tuple(v.str() for v in f.list(max_len=64)),
}


def make_space(name: str, config: dict[str, Any] | None = None, source: str = "") -> SearchSpace:
    """Build space ``name`` from a config dict (CLI options or a table's metadata): each field
    strictly typed, its range checked by the space's config class."""
    if name not in SPACES:
        raise UserError(f"unknown search space {name!r}; valid spaces: {', '.join(SPACES)}")
    space_cls, config_cls = SPACES[name]
    doc = Field(config or {}, source or f"search space {name}", "give a valid space configuration", "config")
    known = {f.name: f.type for f in dataclasses.fields(config_cls)}
    values = {}
    for key, value in doc.items():
        if key not in known:
            raise value.error(f"is not a field of the {name} space ({', '.join(known)})", shown=False)
        if value.value is not None or "None" not in str(known[key]):
            values[key] = _READERS[str(known[key])](value)
    return space_cls(config_cls(**values))  # type: ignore[call-arg]


__all__ = ["OPTION_FIELDS", "SPACES", "SearchSpace", "make_space", "space_overrides"]

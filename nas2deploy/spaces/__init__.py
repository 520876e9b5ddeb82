"""The search-space registry: one ``SpaceEntry`` per space package, found by name.

A space is one package under ``spaces/`` (``densenas/``, ``dcnas/``, ``dpc/``) that exposes an
``ENTRY``; ``register`` adds one (a plugin or a test can register its own), and installed
packages may name theirs under the entry-point group ``nas2deploy.spaces``. Everything here
speaks for any space: finding one, refusing options it does not have, and building it from a
configuration (CLI options or a table's metadata). Reading the registry imports no torch
(``spaces/entry.py``); ``spaces/tables.py`` relates spaces to latency tables.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from nas2deploy.errors import UserError
from nas2deploy.plugins import load_entry_points
from nas2deploy.spaces import dcnas, densenas, dpc
from nas2deploy.spaces.entry import DemoPlan, SpaceEntry, SpaceOption, SpaceParts
from nas2deploy.validate import Field

if TYPE_CHECKING:
    from nas2deploy.spaces.base import SearchSpace

SPACES: dict[str, SpaceEntry] = {}
#: The entry-point group under which installed packages name their spaces (each a ``SpaceEntry``).
ENTRY_POINTS = "nas2deploy.spaces"


def register(entry: SpaceEntry) -> None:
    """Make a space known by its name (its options, data, search, plots and demo come with it)."""
    SPACES[entry.name] = entry


for _package in (densenas, dcnas, dpc):
    register(_package.ENTRY)
load_entry_points(ENTRY_POINTS, SpaceEntry, register)
#: The space commands search when none is named.
DEFAULT_SPACE = densenas.ENTRY.name


def get_space(name: str) -> SpaceEntry:
    if name not in SPACES:
        raise UserError(f"unknown search space {name!r}; valid spaces: {', '.join(SPACES)}")
    return SPACES[name]


def all_options(scope: str) -> dict[str, list[tuple[str, SpaceOption]]]:
    """Every option of ``scope`` that some space takes: field -> [(space, option)]."""
    out: dict[str, list[tuple[str, SpaceOption]]] = {}
    for entry in SPACES.values():
        for option in entry.options:
            if scope in option.scope:
                out.setdefault(option.field, []).append((entry.name, option))
    return out


def space_overrides(name: str, given: dict[str, Any], scope: str = "space") -> dict[str, Any]:
    """The set (not None) options of ``given``; one that space ``name`` lacks is refused by name."""
    entry = get_space(name)
    own = entry.option_fields(scope)
    options = {k: v for k, v in given.items() if v is not None}
    for option in options:
        if option not in own:
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
    entry = get_space(name)
    doc = Field(config or {}, source or f"search space {name}", "give a valid space configuration", "config")
    known = {f.name: f.type for f in dataclasses.fields(entry.config_class)}
    values = {}
    for key, value in doc.items():
        if key not in known:
            raise value.error(f"is not a field of the {name} space ({', '.join(known)})", shown=False)
        if value.value is not None or "None" not in str(known[key]):
            values[key] = _READERS[str(known[key])](value)
    return entry.make(entry.config_class(**values))


__all__ = ["DEFAULT_SPACE", "SPACES", "DemoPlan", "SpaceEntry", "SpaceOption", "SpaceParts", "all_options", "get_space",
           "make_space", "register", "space_overrides"]

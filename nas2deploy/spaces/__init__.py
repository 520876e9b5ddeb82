"""The search-space registry: one ``SpaceEntry`` per space package, found by name.

A space is one package under ``spaces/`` (``densenas/``, ``dcnas/``, ``dpc/``) that exposes an ``ENTRY``;
``register`` adds one (a plugin or a test can register its own). Everything here speaks for any
space: building one from a configuration (CLI options or a table's metadata), refusing options a
space does not have, the space a table was profiled for, and the command that would profile the
ops a table lacks.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable, listing
from nas2deploy.spaces import dcnas, densenas, dpc
from nas2deploy.spaces.base import DemoPlan, SearchSpace, SpaceEntry, SpaceOption
from nas2deploy.validate import Field

SPACES: dict[str, SpaceEntry] = {}


def register(entry: SpaceEntry) -> None:
    """Make a space known by its name (its options, data, search, plots and demo come with it)."""
    SPACES[entry.name] = entry


for _package in (densenas, dcnas, dpc):
    register(_package.ENTRY)
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


def table_space(table: LatencyTable) -> SearchSpace:
    """The search space a table was profiled for (from its metadata)."""
    meta = table.meta.get("space", {})
    return make_space(meta.get("name", ""), meta.get("config"), f"latency table {table.name}: meta.space")


def profile_command(table: LatencyTable, space: SearchSpace, out: str) -> str:
    """The command that measures ``space`` under ``table``'s settings into ``out`` (with
    ``--force`` when ``out`` is the table itself: the complete table replaces it). Every option of
    the table's backend that it recorded, and that differs from what the backend records by
    default, is given, so the new table matches the old one field for field."""
    from nas2deploy.backends import BACKENDS, BackendSettings

    m = table.measurement
    backend = str(m.get("backend", "onnxruntime"))
    parts = ["nas2deploy profile", f"--space {space.name}", f"--backend {backend}", f"--device {m.get('device', 'cpu')}",
             f"--precision {m.get('precision', 'fp32')}", f"--batch {m.get('batch', 1)}", f"--threads {m.get('threads', 1)}"]
    impl = BACKENDS.get(backend)
    if impl is not None:
        plain = impl.recorded(BackendSettings(backend, str(m.get("device", "cpu"))))
        for declared in impl.options:
            value = m.get(declared.name)
            if not declared.command_line or declared.name not in m or value == plain.get(declared.name):
                continue
            parts += _typed(declared.flag, declared.kind, value)
    config = space.config_dict()
    for option in get_space(space.name).options:
        if "space" in option.scope and config.get(option.field) is not None:
            parts += _typed(option.flag, option.kind, config[option.field])
    return " ".join([*parts, f"--out {out}"] + (["--force"] if table.path is not None and Path(out) == table.path else []))


def _typed(flag: str, kind: str, value: Any) -> list[str]:
    """An option as typed on the command line: a set flag alone, any other option with its value."""
    return ([flag] if value else []) if kind == "flag" else [f"{flag} {value}"]


def missing_ops_advice(table: LatencyTable, missing: list[str]) -> str:
    """What to tell a user whose network needs ops the table lacks: the command that measures
    them when the table's space contains them, else to use a table of a space that does."""
    try:
        space = table_space(table)
    except UserError:
        return "profile a table that covers them (nas2deploy profile)"
    if set(missing) <= {s.key for s in space.op_specs()}:
        return f"measure them with: {profile_command(table, space, table.name)}"
    return (f"they lie outside the table's search space ({space.name} {space.config_dict()}), "
            "so use a table profiled for a space that contains them")


def load_table(path: str | os.PathLike[str]) -> LatencyTable:
    """A table, read and validated, that names the command to measure what it lacks."""
    table = LatencyTable.load(path)
    table.advice = lambda missing: missing_ops_advice(table, missing)
    return table


def require_covers(table: LatencyTable, space: SearchSpace) -> None:
    """Refuse a table that does not cover every op of ``space``, with the command that would."""
    missing = table.missing(space.op_specs())
    if missing:
        raise UserError(
            f"latency table {table.name} does not cover the {space.name} space {space.config_dict()}: it lacks "
            f"{listing(missing)}; profile that space with: {profile_command(table, space, 'NEW_TABLE.json')}"
        )


__all__ = ["DEFAULT_SPACE", "SPACES", "DemoPlan", "SearchSpace", "SpaceEntry", "SpaceOption", "all_options", "get_space", "load_table",
           "make_space", "profile_command", "register", "require_covers", "space_overrides", "table_space"]

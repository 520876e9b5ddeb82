"""Latency tables and the spaces they price: the space a table was profiled for, a table that
names the command measuring what it lacks, the refusal of a table that does not cover a space,
and that command itself (``profile_command``: the space's options and the table's backend
settings, so the new table matches the old one field for field)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nas2deploy.errors import UserError
from nas2deploy.latency.table import LatencyTable, listing
from nas2deploy.spaces import get_space, make_space
from nas2deploy.spaces.base import SearchSpace


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

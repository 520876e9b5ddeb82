"""Backends and search spaces from installed packages: each names its own under an entry-point
group (``nas2deploy.backends``, ``nas2deploy.spaces``), and the registries load them when they
are first imported."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable

from nas2deploy.errors import UserError


def load_entry_points(group: str, expected: type, register: Callable[[Any], object]) -> None:
    """Register what each entry point of ``group`` names: an ``expected`` object, or a class or
    factory that makes one. A package that fails to load is named in one line."""
    for point in entry_points(group=group):
        try:
            found = point.load()
            if not isinstance(found, expected) and callable(found):
                found = found()
        except Exception as exc:  # a plugin's import error is its own, and must not hide the others
            raise UserError(f"{point.value} (entry point {point.name!r} of {group}) does not load: {exc}") from None
        if not isinstance(found, expected):
            raise UserError(f"entry point {point.name!r} of {group} ({point.value}) gives {type(found).__name__}, "
                            f"not a {expected.__name__}")
        register(found)

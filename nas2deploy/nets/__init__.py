"""Derived networks: the kinds of network behind one interface (``Network``), and their files.

``KINDS`` maps the ``kind`` field of an architecture file to its class: ``chain`` (``Arch``, a
MBConv chain for classification), ``cells`` (``SegArch``, DCNAS cells for segmentation) and ``dpc``
(``DPCNet``, a chain backbone with a dense prediction cell, for segmentation).
Files written before the field existed carry no ``kind``; their ``task`` decides (segmentation:
cells, else chain), so they keep loading. ``register_kind`` adds a kind (a search space that
builds networks of its own). Shipped architectures are JSON files in ``archs/``, loaded by name
(``mobilenetv2``, ``densenas-a`` ...).
"""

from __future__ import annotations

import os
from pathlib import Path

from nas2deploy.errors import UserError
from nas2deploy.fileio import atomic_write_json, check_format, read_json
from nas2deploy.nets.base import Network
from nas2deploy.nets.cells import SegArch
from nas2deploy.nets.chain import ARCH_FORMAT, ARCH_VERSION, Arch
from nas2deploy.nets.dpc import DPCNet
from nas2deploy.validate import NETWORK_FIX, Field

#: Network classes by the ``kind`` field of their JSON.
KINDS: dict[str, type[Network]] = {cls.kind: cls for cls in (Arch, SegArch, DPCNet)}
#: The kind of files written before ``kind`` existed, by their ``task``.
_LEGACY = {"classification": "chain", "segmentation": "cells"}
#: Named architectures shipped with the package, one JSON file each (networks are data).
ARCH_DIR = Path(__file__).parent / "archs"


def register_kind(cls: type[Network]) -> type[Network]:
    """Make network class ``cls`` readable from architecture files by its ``kind``."""
    if KINDS.get(cls.kind, cls) is not cls:
        raise ValueError(f"network kind {cls.kind!r} is taken by {KINDS[cls.kind].__name__}")
    KINDS[cls.kind] = cls
    return cls


def named_archs() -> list[str]:
    return sorted(p.stem for p in ARCH_DIR.glob("*.json"))


def network_from_field(doc: Field) -> Network:
    """The network a validated-as-you-go JSON document describes, by its ``kind``."""
    kind = doc.get("kind")
    if kind is not None:
        name = kind.str(tuple(KINDS))
    else:
        task = doc.get("task")
        name = _LEGACY[task.str(tuple(_LEGACY)) if task else "classification"]
    return KINDS[name].from_field(doc)


def load_arch(path: str | os.PathLike[str]) -> Network:
    """Load an arch file, or a shipped architecture by name (``mobilenetv2``, ``densenas-a``...)."""
    p = Path(path)
    if not p.exists() and str(path) in named_archs():
        p = ARCH_DIR / f"{path}.json"
    elif not p.exists():
        raise UserError(f"arch {path}: no such file, nor a named architecture ({', '.join(named_archs())})")
    doc = check_format(read_json(p, "arch"), p, ARCH_FORMAT, ARCH_VERSION, "arch")
    return network_from_field(Field(doc, f"arch {path}", NETWORK_FIX))


def save_arch(arch: Network, path: str | os.PathLike[str]) -> None:
    atomic_write_json(path, arch.to_dict())


__all__ = ["KINDS", "Arch", "DPCNet", "Network", "SegArch", "load_arch", "named_archs", "network_from_field", "register_kind",
           "save_arch"]

"""One rule set for every field nas2deploy reads from a file.

Tables, architectures, run configurations and reports are read through ``Field``: a parsed JSON
value together with the file it came from and the path that leads to it
(``entries['mbconv_k3_e6_s1_i24x56x56_o24'].stats.median_ms``). Each accessor states the rule
the value must satisfy (a strict type: a JSON bool is not a number and a number is not a bool;
finite; inside bounds), and a value that breaks it ends in one line that names the file, the
field path, the rule, the value found and the fix::

    latency table t.json: field entries['conv_k3...'].stats.median_ms must be a finite number
    in (0, 100000], got -0.05; profile the table again or restore the file

The bounds are generous limits of what any real network, table or run can hold (a width of
16384 channels, 4096-pixel inputs, 100 s per op), not tuning values: they stop a corrupt or
hostile file from allocating terabytes or overflowing arithmetic, far from any real use.
"""

from __future__ import annotations

import builtins
import math
from typing import Any, Iterator, Sequence

from nas2deploy.errors import UserError

#: Bounds shared by every kind of file (see the module docstring).
MAX_CHANNELS = 16384
MAX_SIDE = 4096
MAX_CLASSES = 100_000
MAX_OP_MS = 1e5
MAX_NAME = 256


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Field:
    """A value read from a file, the file it came from and the path that names it."""

    def __init__(self, value: Any, source: str, fix: str, path: str = ""):
        self.value, self.source, self.fix, self.path = value, source, fix, path

    def error(self, rule: str, shown: bool = True, fix: str | None = None) -> UserError:
        where = f"field {self.path}" if self.path else "the document"
        found = f", got {_shown(self.value)}" if shown else ""
        return UserError(f"{self.source}: {where} {rule}{found}; {fix or self.fix}")

    def _member(self, key: str) -> str:
        """How a member is written in a field path: ``.name``, or ``['odd key']``."""
        if key.isidentifier():
            return f".{key}" if self.path else key
        return f"[{key!r}]"

    def _child(self, value: Any, part: str) -> Field:
        return Field(value, self.source, self.fix, self.path + part)

    # -- containers ------------------------------------------------------------------------------
    def object(self) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            raise self.error("must be a JSON object")
        return self.value

    def has(self, key: str) -> bool:
        return key in self.object()

    def __getitem__(self, key: str) -> Field:
        """A required member of an object."""
        obj = self.object()
        name = self._member(key)
        if key not in obj:
            raise Field(None, self.source, self.fix, self.path + name).error("is missing", shown=False)
        return self._child(obj[key], name)

    def get(self, key: str) -> Field | None:
        """An optional member: None when absent or JSON null."""
        obj = self.object()
        if obj.get(key) is None:
            return None
        return self[key]

    def items(self, max_len: int = 100_000) -> Iterator[tuple[str, Field]]:
        obj = self.object()
        if len(obj) > max_len:
            raise self.error(f"must hold at most {max_len} members", shown=False)
        for key, value in obj.items():
            yield key, self._child(value, self._member(key))

    def list(self, max_len: int = 100_000, min_len: int = 0) -> list[Field]:
        if not isinstance(self.value, list):
            raise self.error("must be a JSON list")
        if not min_len <= len(self.value) <= max_len:
            raise self.error(f"must hold {min_len} to {max_len} items (holds {len(self.value)})", shown=False)
        return [self._child(v, f"[{i}]") for i, v in enumerate(self.value)]

    # -- scalars ---------------------------------------------------------------------------------
    def int(self, lo: int = 0, hi: int = 2**31, choices: Sequence[int] | None = None) -> int:
        v = self.value
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.error("must be an integer")
        if choices is not None and v not in choices:
            raise self.error(f"must be one of {', '.join(map(str, choices))}")
        if not lo <= v <= hi:
            raise self.error(f"must be an integer in [{lo}, {hi}]")
        return v

    def number(self, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False) -> float:
        """A finite JSON number (int or float, not bool) in [lo, hi] (or (lo, hi] with lo_open)."""
        v = self.value
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise self.error("must be a number")
        if isinstance(v, int) and abs(v) > 2**53:
            raise self.error("must be a number of sensible size")
        value = float(v)
        left = "(" if lo_open else "["
        rule = f"must be a finite number in {left}{lo:g}, {hi:g}]"
        if not math.isfinite(value) or not (value > lo if lo_open else value >= lo) or value > hi:
            raise self.error(rule)
        return value

    def bool(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.error("must be true or false")
        return self.value

    def hexdigest(self, digits: builtins.int, what: builtins.str = "digest") -> builtins.str:
        """A digest written as ``digits`` lowercase hexadecimal digits (a SHA-256, a chunk's BLAKE2b)."""
        value = self.str(max_len=digits)
        if len(value) != digits or value.strip("0123456789abcdef"):
            raise self.error(f"must be a {what} of {digits} hexadecimal digits")
        return value

    def str(self, choices: Sequence[builtins.str] | None = None, max_len: builtins.int = MAX_NAME) -> builtins.str:
        v = self.value
        if not isinstance(v, str):
            raise self.error("must be a string")
        if choices is not None and v not in choices:
            raise self.error(f"must be one of {', '.join(choices)}")
        if len(v) > max_len:
            raise self.error(f"must be at most {max_len} characters", shown=False)
        return v


# -- rules shared by the network files (Arch, SegArch) -------------------------------------------
#: A network file may describe at most this much work (10^12 multiply-adds, 10^9 parameters):
#: a thousand times DenseNAS-C, and far below what would exhaust a machine when built.
MAX_NETWORK_MACS = 10**12
MAX_NETWORK_PARAMS = 10**9
NETWORK_FIX = "correct the field or derive the architecture again"


def network_meta(doc: Field) -> dict[str, Any]:
    """The ``meta`` object of an architecture: where it came from. ``export`` reads ``lut``,
    ``data`` and ``budget_ms`` from it, so those are typed; other members pass through."""
    meta = doc.get("meta")
    if meta is None:
        return {}
    out = dict(meta.object())
    for key in ("lut", "data", "space"):
        if (f := meta.get(key)) is not None:
            out[key] = f.str(max_len=4096)
    if (f := meta.get("budget_ms")) is not None:
        out["budget_ms"] = f.number(0, MAX_OP_MS, lo_open=True)
    return out


def network_size(doc: Field, macs: int, params: int) -> None:
    """Refuse a network beyond ``MAX_NETWORK_MACS`` / ``MAX_NETWORK_PARAMS`` before it is built."""
    if macs > MAX_NETWORK_MACS or params > MAX_NETWORK_PARAMS:
        raise doc.error(f"describes a network of {macs:.3g} multiply-adds and {params:.3g} parameters, beyond "
                        f"{MAX_NETWORK_MACS:.0e} / {MAX_NETWORK_PARAMS:.0e}", shown=False)

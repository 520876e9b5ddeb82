"""Safe reading and atomic writing of the JSON files nas2deploy owns.

Tables, architectures and reports are plain JSON (never pickle or eval): untrusted files can at
worst fail to parse. Writes go to a temporary file in the same folder and are renamed over the
target, so a kill mid-write leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nas2deploy.errors import UserError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsync'ed temporary file and an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Serialise ``obj`` as indented JSON and write it atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file, turning every failure into one line that names the file and ``what`` it is."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} {p}: no such file")
    if p.is_dir():
        raise UserError(f"{what} {p}: is a folder, expected a JSON file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {p}: cannot be read ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{what} {p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "the file is corrupt or truncated"
        ) from None


def check_format(doc: Any, path: str | os.PathLike[str], fmt: str, version: int, what: str) -> dict[str, Any]:
    """Check the ``format``/``version`` header every nas2deploy JSON file carries."""
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise UserError(f"{what} {path}: not a {fmt} file (missing or wrong 'format' field)")
    if doc.get("version") != version:
        raise UserError(
            f"{what} {path}: format version {doc.get('version')!r} is not supported "
            f"(this nas2deploy reads version {version}); re-create the file with this version"
        )
    return doc

"""Safe reading and writing of the files nas2deploy owns.

Tables, architectures and reports are plain JSON (never pickle or eval): untrusted files can at
worst fail to parse, and ``read_json`` bounds their size and nesting so that a hostile file
cannot exhaust memory or the interpreter's stack. Writes go to a temporary file in the same
folder and are renamed over the target, so a kill mid-write leaves either the old file or the new
one, never half of one. No write follows a symbolic link: a link planted where an output goes is
refused by name (``atomic_write_bytes``, ``append_line``), so a run folder cannot be used to
overwrite a file elsewhere. ``exclusive`` gives one process at a time an output (a table being
profiled, a search run), and names the process that holds it.

Files are read only when they are regular files (a device, FIFO or socket is refused before it
is read or waited on) and never past a hard byte cap (``read_capped``: ``st_size`` is 0 for
devices, so it cannot be the cap). Lines are appended only to a file with one name
(``append_line`` refuses a hard-linked file, whose other name lies elsewhere). Outputs take the
user's umask like any file they create (a temporary file is made 0600 and widened before its
rename), and a name too long to carry the temporary suffix is refused before anything is written.

A folder a command claims holds no link at any level (``claim_folder`` walks it), and the large
files it maps into memory (``mapped_array``) are opened by the same rules, created at their full
size with ``posix_fallocate`` so that a full disk is one line naming the file and the bytes it
needs, never a SIGBUS when a page of a sparse map finds no block. A write that runs out of space
names its file (``atomic_write_bytes``, ``append_line``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import numpy as np

from nas2deploy.errors import UserError

#: No file nas2deploy reads as JSON comes near these (a 224 table is ~200 kB, 4 levels deep).
MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 32
#: The prefix of the files ``require_writable`` creates and removes (torchrun ranks claim a run
#: folder at once and may see each other's).
PROBE = ".nas2deploy-probe."
#: What ``tempfile.mkstemp`` adds to a name beside ``atomic_write_bytes``'s prefix and suffix:
#: "." + name + "." + 8 random characters + ".tmp".
TEMP_EXTRA = 1 + 1 + 8 + 4


def check_name(path: str | os.PathLike[str]) -> Path:
    """``path``, or a UserError when its name cannot carry the temporary suffix of an atomic
    write within the filesystem's limit on a name's length."""
    target = Path(path)
    folder = target.parent if target.parent.exists() else Path(".")
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(target.name)) + TEMP_EXTRA > limit:
        raise UserError(f"{target}: a name of {len(os.fsencode(target.name))} bytes; this filesystem allows "
                        f"{limit}, and writing it atomically needs {TEMP_EXTRA} more: choose a shorter name")
    return target


def umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _not_regular(p: Path, mode: int, what: str) -> UserError | None:
    """The refusal of a file that is not a regular file (a folder, device, FIFO or socket)."""
    if stat.S_ISDIR(mode):
        return UserError(f"{what} {p}: is a folder, expected a file")
    if not stat.S_ISREG(mode):
        return UserError(f"{what} {p}: is not a regular file (a device, FIFO or socket); give the {what} itself")
    return None


def require_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` when it is a regular file (links to one allowed), else one line saying what it is."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{what} {p}: no such file") from None
    if (error := _not_regular(p, mode, what)) is not None:
        raise error
    return p


def _read_open(fd: int, p: Path, what: str, cap: int) -> bytes:
    """The bytes of the open regular file ``fd`` from its start, at most ``cap`` of them."""
    if (error := _not_regular(p, os.fstat(fd).st_mode, what)) is not None:
        raise error
    chunks, size = [], 0
    try:
        while size <= cap:
            chunk = os.pread(fd, min(1 << 20, cap + 1 - size), size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UserError(f"{what} {p}: cannot be read ({exc.strerror or exc})") from None
    if size > cap:
        raise UserError(f"{what} {p}: more than {cap} bytes, more than any {what} can hold; the file is not a {what}")
    return b"".join(chunks)


def read_capped(path: str | os.PathLike[str], what: str, cap: int) -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes, or one line saying what it is not."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the open
    except FileNotFoundError:
        raise UserError(f"{what} {p}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{what} {p}: is a folder, expected a file") from None
    except OSError as exc:
        raise UserError(f"{what} {p}: cannot be read ({exc.strerror or exc})") from None
    try:
        return _read_open(fd, p, what, cap)
    finally:
        os.close(fd)


def _require_own_file(fd: int, path: str | os.PathLike[str]) -> None:
    """Refuse to append to or cut a file that is not a regular file with one name: a second,
    hard-linked name lies elsewhere, and the change would reach it too."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path}: is not a regular file; nas2deploy appends only to its own journals")
    if info.st_nlink > 1:
        raise UserError(f"{path}: has {info.st_nlink} names (a hard link to a file elsewhere); nas2deploy never "
                        "appends to a linked file: remove the link or choose another output")


def read_json_lines(path: str | os.PathLike[str], what: str, fix: str, cap: int) -> list[Any]:
    """The records of a journal of JSON lines that nas2deploy appends to. A last line torn by a
    kill mid-append (no newline, or not JSON) is cut off the file, so that the next append starts
    on a fresh line; a damaged line before the end is refused by its number (``fix`` says what to
    do). Only a regular file with one name is read, and never through a link."""
    fd = open_no_follow(path, os.O_RDWR)
    try:
        _require_own_file(fd, path)
        data = _read_open(fd, Path(path), what, cap)
        lines = data.splitlines(keepends=True)
        records = []
        for n, line in enumerate(lines, 1):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("torn")
                records.append(json.loads(line))
            except (ValueError, RecursionError):
                if n == len(lines):
                    os.ftruncate(fd, len(data) - len(line))
                    break
                raise UserError(f"{what} {path}: line {n} is corrupt; {fix}") from None
        return records
    finally:
        os.close(fd)


def refuse_link(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, or a UserError when a symbolic link stands there."""
    target = Path(path)
    if target.is_symlink():
        raise UserError(
            f"{target}: is a symbolic link (to {os.readlink(target)}); nas2deploy never writes through links: "
            "remove it or choose another output"
        )
    return target


def require_writable(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """Prove that ``path`` (a file or folder to be written) can be created, by creating and
    removing a probe file in the nearest folder that exists: a read-only or missing location
    fails here, before the work, naming ``path`` rather than a temporary file afterwards."""
    target = Path(path)
    folder = target if target.is_dir() else target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{flag} {target}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE, dir=folder)
    except OSError as exc:
        raise UserError(f"{flag} {target}: cannot write in {folder} ({exc.strerror or exc}): choose another location") from None
    os.close(fd)
    os.unlink(probe)


def claim_file(path: str | os.PathLike[str], force: bool, flag: str = "--out") -> Path:
    """The one rule for a file a command writes, checked before its work: not a link, its
    location writable, and not an existing file unless ``force`` (or the command is updating
    or resuming it)."""
    target = refuse_link(check_name(path))
    if target.exists() and not target.is_file():
        raise UserError(f"{flag} {target}: exists and is not a file")
    if target.exists() and not force:
        raise UserError(f"{flag} {target}: exists; pass --force to overwrite it, or choose another")
    require_writable(target, flag)
    return target


def claim_folder(path: str | os.PathLike[str], force: bool, flag: str = "--out", own: tuple[str, ...] = ()) -> Path:
    """The one rule for a folder a command writes into, checked before its work: not a link,
    writable, and empty (or holding only the names in ``own``, what the command itself keeps
    there) unless ``force``; with ``force``, no link inside it is written through either."""
    target = refuse_link(path)
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {target}: exists and is not a folder")
    entries = list(target.iterdir()) if target.is_dir() else []
    others = sorted(p.name for p in entries if p.name not in own and not p.name.startswith(PROBE))
    if others and not force:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise UserError(f"{flag} {target}: folder is not empty ({shown}); choose another or pass --force to write into it")
    refuse_links_below(target)  # --force replaces files, and caches are reopened: never through a link
    require_writable(target, flag)
    return target


def refuse_links_below(folder: Path) -> None:
    """Refuse a symbolic link at any level below ``folder``, and a file with a second (hard-linked)
    name: writing or appending there would change a file elsewhere."""
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            entry = Path(root) / name
            refuse_link(entry)
            info = entry.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                raise UserError(f"{entry}: has {info.st_nlink} names (a hard link to a file elsewhere); nas2deploy "
                                "never writes a linked file: remove the link or choose another output")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsync'ed temporary file and an atomic rename, with
    the mode any new file of the user's gets (0666 less the umask)."""
    target = refuse_link(check_name(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~umask())
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_space(target, len(data)) from None
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Serialise ``obj`` as indented JSON and write it atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def open_no_follow(path: str | os.PathLike[str], flags: int) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` with a UserError naming it."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path)
        raise


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line to a journal or log, fsync'ed, never through a link nor to a file with
    another name (a hard link: appending would change the file elsewhere too)."""
    fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    data = (line.rstrip("\n") + "\n").encode()
    try:
        _require_own_file(fd, path)
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):  # a short write: the disk filled mid-line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)  # no torn line left behind
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise no_space(Path(path), len(data)) from None
            raise
    finally:
        os.close(fd)


def free_bytes(path: str | os.PathLike[str]) -> int:
    """The bytes an unprivileged writer may still use on the filesystem of ``path`` (or of its
    nearest folder that exists)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


def no_space(path: Path, needed: int) -> UserError:
    """The one line for a write that did not fit: the file, the bytes it needs and those free."""
    return UserError(f"{path}: no space left on its filesystem to write {needed:,} bytes ({free_bytes(path):,} free); "
                     "free some space or choose another output")


def require_space(path: str | os.PathLike[str], needed: int) -> None:
    """Refuse, before the work, a file of ``needed`` bytes that its filesystem cannot hold."""
    if free_bytes(path) < needed:
        raise no_space(Path(path), needed)


def mapped_array(path: str | os.PathLike[str], dtype: Any, shape: tuple[int, ...], mode: str,
                 what: str) -> "np.memmap[Any, Any]":
    """A memory map of the array file ``path`` by the rules of every file nas2deploy writes: never
    through a link, only a regular file with one name. ``mode`` "w+" creates it at its full
    size, its blocks allocated (``posix_fallocate``): a disk without room refuses it here, in one
    line, where a sparse file would fault (SIGBUS) on the first page that finds no block; "r" and
    "r+" open one that must hold exactly the array's bytes (a truncated or replaced file is
    refused, never zero-filled back)."""
    import numpy as np  # only where an array is mapped: the CLI starts without it

    p = Path(path)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    flags = {"r": os.O_RDONLY, "r+": os.O_RDWR, "w+": os.O_RDWR | os.O_CREAT}[mode]
    try:
        fd = open_no_follow(p, flags)
    except FileNotFoundError:
        raise UserError(f"{what} {p}: no such file; build it again") from None
    try:
        _require_own_file(fd, p)
        if mode == "w+":
            os.ftruncate(fd, 0)
            require_space(p, nbytes)
            try:
                os.posix_fallocate(fd, 0, max(nbytes, 1))
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise no_space(p, nbytes) from None
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.ftruncate(fd, nbytes)  # a filesystem without allocation: the size at least
        elif (size := os.fstat(fd).st_size) != nbytes:
            raise UserError(f"{what} {p}: holds {size:,} bytes where its record says {nbytes:,}; it was truncated or "
                            "replaced: build it again")
        with os.fdopen(os.dup(fd), "r+b" if mode != "r" else "rb") as fh:
            return np.memmap(fh, dtype, "r" if mode == "r" else "r+", shape=shape)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created beside an output) for the block.

    A second process is refused at once, naming the holder's pid. The lock is ``flock`` on the
    file, so it is released when the holder exits, however it exits; the file is removed by the
    holder on a clean exit (and re-checked after locking, so a lock file removed meanwhile is
    never mistaken for the current one). The holder removes it however the block ends; a killed holder
leaves it, unlocked, for the next one to take.
    """
    lock = Path(path)
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = open_no_follow(lock, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise
            raise UserError(f"{what}: cannot write in {lock.parent} ({exc.strerror or exc}): choose another location") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{what} is in use by another nas2deploy process (pid {holder}, lock {lock}); "
                            "wait for it to finish or choose another output") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and lock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # still held: whoever opens the name next gets a new file
        os.close(fd)


def lock_path(out: str | os.PathLike[str]) -> Path:
    """The lock file beside a file output (``OUT.lock``)."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Hold ``path``/.lock (``exclusive``) for the block: the first thing a command that writes a
    folder does, before it checks or changes anything there, so that a second process is refused
    having changed nothing. A folder this call created and that stays empty is removed after."""
    folder = refuse_link(path)
    created = not folder.exists()
    try:
        with exclusive(folder / ".lock", what):
            yield folder
    finally:
        if created:
            with contextlib.suppress(OSError):  # not empty (the work wrote there, or a next holder took it)
                folder.rmdir()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _depth(doc: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(value, dict):
            stack += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]
    return deepest


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file, turning every failure into one line that names the file and ``what`` it is."""
    p = Path(path)
    try:
        text = read_capped(p, what, MAX_JSON_BYTES).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {p}: cannot be read ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{what} {p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "the file is corrupt or truncated"
        ) from None
    except RecursionError:
        doc = None  # nested deeper than the parser goes: refused below like any deep file
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = _depth(doc)
    if depth > MAX_JSON_DEPTH:
        raise UserError(f"{what} {p}: JSON nested deeper than {MAX_JSON_DEPTH} levels; the file is not a {what}")
    return doc


def check_format(doc: Any, path: str | os.PathLike[str], fmt: str, version: int | tuple[int, ...],
                 what: str) -> dict[str, Any]:
    """Check the ``format``/``version`` header every nas2deploy JSON file carries (``version``:
    the one this release writes, or every version it reads)."""
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise UserError(f"{what} {path}: not a {fmt} file (missing or wrong 'format' field)")
    found = doc.get("version")
    readable = version if isinstance(version, tuple) else (version,)
    if not isinstance(found, int) or isinstance(found, bool) or found not in readable:
        raise UserError(
            f"{what} {path}: format version {found!r} is not supported "
            f"(this nas2deploy reads version {' or '.join(map(str, readable))}); re-create the file with this version"
        )
    return doc

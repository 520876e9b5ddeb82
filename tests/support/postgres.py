"""A private PostgreSQL server for tests and benchmarks: a fresh cluster in a temporary folder,
listening only on a Unix socket there, stopped and removed afterwards. Black-box studies are
tested on it as a team runs them on its database server.

Needs PostgreSQL's server programs (``initdb``, ``pg_ctl``: on PATH or under
/usr/lib/postgresql/*/bin) and psycopg2 (``pip install 'nas2deploy[postgres]'``). PostgreSQL
refuses to run as root; as root the cluster belongs to the ``postgres`` user and its programs
run through ``runuser``. ``unavailable()`` says why a machine cannot, for a skip reason."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator


def _program(name: str) -> str | None:
    found = shutil.which(name)
    return found or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)


def unavailable() -> str | None:
    """Why this machine cannot run the server, or None when it can."""
    if not (_program("initdb") and _program("pg_ctl")):
        return "PostgreSQL's server programs (initdb, pg_ctl) are not installed on this machine"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed: pip install 'nas2deploy[postgres]'"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user, and PostgreSQL refuses to run as root"
    return None


@contextlib.contextmanager
def server() -> Iterator[str]:
    """A running server with an empty database ``studies``; yields its SQLAlchemy URL."""
    folder = Path(tempfile.mkdtemp(prefix="n2d-pg-"))  # short: a socket path is limited to 107 bytes
    prefix: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log = folder / "data", folder / "server.log"

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, text=True)

    try:
        run(str(_program("initdb")), "-D", str(data), "-U", "nas2deploy", "-A", "trust", "--no-sync")
        run(str(_program("pg_ctl")), "-D", str(data), "-l", str(log), "-w", "-o",
            f"-k {folder} -c listen_addresses='' -c fsync=off", "start")
        try:
            run(str(_program("createdb") or "createdb"), "-h", str(folder), "-U", "nas2deploy", "studies")
            yield f"postgresql+psycopg2://nas2deploy@/studies?host={folder}"
        finally:
            run(str(_program("pg_ctl")), "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)

"""A throw-away PostgreSQL for the tests of the shared job queue.

GATING_TEST_POSTGRES_URL names a server to use (each test gets a fresh database in it). Otherwise
the tests make their own cluster: `initdb` into a temporary folder and `pg_ctl start` on a free
loopback port, from the PostgreSQL found on PATH or under /usr/lib/postgresql/*/bin (Debian's
`postgresql` package). initdb refuses to run as root, so as root the cluster belongs to the
`postgres` user (Debian's package makes it) or else `nobody`. With no PostgreSQL at all the tests
skip and say so, except in CI (CI or GATING_REQUIRE_POSTGRES set), where .ci/run installs it and
they fail instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

REQUIRED = "GATING_REQUIRE_POSTGRES"


def bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, newest version first."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.access(os.path.join(d, "initdb"), os.X_OK):
            return Path(d)
    return None


def missing() -> None:
    """Skip (or, in CI, fail): no PostgreSQL here."""
    why = ("no PostgreSQL: install Debian's postgresql package (apt-get install postgresql) or set "
           "GATING_TEST_POSTGRES_URL")
    if os.environ.get("CI") or os.environ.get(REQUIRED):
        pytest.fail(f"{why}; .ci/run installs it, so in CI it must be there")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A PostgreSQL cluster in a temporary folder, started on a free loopback port, trusting local users."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="gating-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            names = {p.pw_name for p in pwd.getpwall()}
            self.user = "postgres" if "postgres" in names else "nobody"
            os.chown(self.base, pwd.getpwnam(self.user).pw_uid, -1)
        self.url = f"postgresql://gating@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        argv = [str(self.bindir / cmd[0]), *cmd[1:]]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.base)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> Cluster:
        self._run("initdb", "-D", str(self.data), "-U", "gating", "--auth=trust", "-E", "UTF8", "--no-sync")
        # fsync off: a test kills App processes, never the database server
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-o", opts, "-w", "start")
        return self

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    import psycopg

    name = f"gating_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    head, _, _ = server_url.rpartition("/")
    return f"{head}/{name}"

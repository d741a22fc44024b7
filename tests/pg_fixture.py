"""A throw-away PostgreSQL server for the tests (issue 17): initdb into a temporary folder,
started on a free loopback port with its unix socket in that folder, trust authentication,
stopped and deleted at the end of the session.

PostgreSQL refuses to run as root: as root the server runs as ``nobody``. The binaries are
looked up on PATH, then in Debian's ``/usr/lib/postgresql/<version>/bin``; without them the
tests that need a database are skipped with that reason (CI installs them:
``.ci/system-packages``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg


def find_bin(name: str) -> str | None:
    """``initdb``/``pg_ctl`` on PATH or in the newest Debian PostgreSQL folder."""
    found = shutil.which(name)
    if found:
        return found
    debian = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(debian[-1]) if debian else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.getuid() != 0:
        return argv
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]


@dataclass
class Server:
    """A running server; :meth:`database` makes an empty database and gives its URL."""

    port: int
    folder: Path
    pg_ctl: str

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_server_user([self.pg_ctl, "-D", str(self.folder / "data"), "-m", mode, "stop"]),
            check=False,
            capture_output=True,
        )

    def start(self) -> None:
        data = self.folder / "data"
        log = self.folder / "log"
        opts = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_server_user(
                [self.pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "start"]
            ),
            check=True,
            capture_output=True,
        )


@contextmanager
def postgres_server() -> Iterator[Server]:
    """Start a server for the block; stop it and delete its folder after."""
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise FileNotFoundError("PostgreSQL's initdb/pg_ctl are not installed")
    folder = Path(tempfile.mkdtemp(prefix="pipelines-pg-"))
    folder.chmod(0o755)
    if os.getuid() == 0:
        shutil.chown(folder, "nobody", "nogroup")
    subprocess.run(
        _as_server_user(
            [initdb, "-D", str(folder / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    server = Server(_free_port(), folder, pg_ctl)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)

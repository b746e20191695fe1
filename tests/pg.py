"""A PostgreSQL server for the tests, started from pgserver's bundled binaries (no system install).

:class:`PgServer` runs one server for a test session, listening on 127.0.0.1 (workers on
"other machines" connect over TCP) and on a socket folder of its own; each test gets a
fresh database. As root, pgserver runs the server as its own system user ``pgserver``
(created when missing), as PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import tempfile
import warnings
from pathlib import Path

try:
    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set", at import
        warnings.simplefilter("ignore")
        import pgserver
    import psycopg
except ImportError as exc:  # the tests that need a server are skipped with this reason
    MISSING: str | None = f"PostgreSQL tests need pgserver and psycopg ({exc.name} is not installed)"
else:
    MISSING = None


#: A role that logs in over TCP with a password only (see :meth:`PgServer.password_uri`).
PASSWORD_ROLE = "tui_app_pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One running PostgreSQL 16 server in a temporary folder of its own (data folder, log, socket
    folder), outside pytest's: pytest makes its base folder private to root, which the server's
    user could then no longer enter.

    Args:
        fsync: PostgreSQL's ``fsync`` (off by default, for fast tests; on for benchmarks, as a
            production server runs).

    Attributes:
        port: the TCP port on 127.0.0.1.
        socket_dir: the folder of its Unix socket.
    """

    def __init__(self, *, fsync: bool = False) -> None:
        self.root = root = Path(tempfile.mkdtemp(prefix="tui_app-pg-"))
        root.chmod(0o755)
        self.pgdata = root / "pgdata"
        self.socket_dir = root / "sock"
        self.port = _free_port()
        self._names = itertools.count(1)
        # pgserver makes the data folder (as its own user when root) and starts a socket-only
        # server; it is started again here to listen on 127.0.0.1 as well
        started = pgserver.get_server(self.pgdata, cleanup_mode=None)
        self._user = started.system_user
        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._user)
        # every login is trusted but this role's over TCP, which must give its password
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self.socket_dir.mkdir()
        self.socket_dir.chmod(0o777)
        self._options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync={'on' if fsync else 'off'}"
            " -c max_connections=200"
        )
        self._ctl("start")

    def _ctl(self, action: str) -> None:
        pgserver.pg_ctl(
            ["-w", "-m", "fast", "-o", self._options, "-l", str(self.pgdata / "log"), action],
            pgdata=self.pgdata,
            user=self._user,
            timeout=60,
        )

    def restart(self) -> None:
        """Stop the server (every connection is cut) and start it again on the same port."""
        self._ctl("restart")

    def uri(self, database: str = "postgres", *, tcp: bool = True) -> str:
        """A connection URI: TCP on 127.0.0.1, or libpq's socket form."""
        if tcp:
            return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def password_uri(self, database: str, password: str) -> str:
        """A TCP URI for :data:`PASSWORD_ROLE`, which owns ``database`` and logs in with ``password``
        (the URI holds no password)."""
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PASSWORD_ROLE,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(f"{verb} ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{password}'")
            conn.execute(f'ALTER DATABASE "{database}" OWNER TO {PASSWORD_ROLE}')
        with psycopg.connect(self.uri(database), autocommit=True) as conn:
            conn.execute(f"ALTER SCHEMA public OWNER TO {PASSWORD_ROLE}")
        return f"postgresql://{PASSWORD_ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its name."""
        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def sql(self, database: str, statement: str, *args: object) -> list[tuple]:
        """Run one statement (``?`` placeholders) on ``database`` through a connection of its own."""
        with psycopg.connect(self.uri(database), autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), args)
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        try:
            pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._user)
        except Exception:  # noqa: BLE001 - stopped anyway, below
            pid = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
            os.kill(int(pid), signal.SIGQUIT)
        shutil.rmtree(self.root, ignore_errors=True)

"""The command line over a PostgreSQL state: ``migrate-state`` (SQLite -> PostgreSQL -> SQLite through
the real CLI), ``status`` and commands on a database, and the one-line errors of a server that cannot be
reached (exit 74) or refuses (exit 2)."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_project

from tui_app.store import open_store

psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL store needs psycopg (the postgres extra)")


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m tui_app ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "tui_app", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env=env,
    )


def set_state(config: Path, state: str, extra: str = "") -> Path:
    """Point ``[project] state`` of ``config`` at ``state`` (replacing an earlier one), as the user
    does after ``migrate-state``."""
    lines = [
        line
        for line in config.read_text().splitlines(keepends=True)
        if not line.startswith(("state = ", "state_password_env = "))
    ]
    text = "".join(lines).replace("[project]\n", f"[project]\nstate = {json.dumps(state)}\n{extra}", 1)
    config.write_text(text)
    return config


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def takes(location: Path | str) -> list[tuple[str, int, str, str]]:
    """``(collection, item id, path, sha256)`` of every take in the store at ``location``."""
    store = open_store(location)
    try:
        return sorted((t.collection, t.take.item_id, t.take.path, t.take.sha256) for t in store.all_takes())
    finally:
        store.close()


def snapshot(cwd: Path) -> tuple[dict, dict]:
    """``status --json`` and ``status --review --json``."""
    status, review = cli("status", "--json", cwd=cwd), cli("status", "--review", "--json", cwd=cwd)
    assert status.returncode == 0 and review.returncode == 0, status.stderr + review.stderr
    return json.loads(status.stdout), json.loads(review.stdout)


def one_error_line(run: subprocess.CompletedProcess) -> str:
    """The one line a failed command printed on stderr (and nothing else: no traceback)."""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith("tui-app: error: "), lines
    return lines[0]


def test_migrate_state_sqlite_to_postgres_and_back_through_the_cli(tmp_path, pg_uri):
    config = write_project(tmp_path, entries=6, pages=2, photos=1)
    assert cli("--batch", cwd=tmp_path).returncode == 0
    assert (
        cli("review", "dataset", "arctic_a0001", "--reject", "--note", "mumbled", cwd=tmp_path).returncode
        == 0
    )
    before = snapshot(tmp_path)
    sums = takes(tmp_path / "data" / "state.sqlite")
    assert len(sums) == 6 + 3 + 3 and before[1]["dataset"]["rejected"] == 1

    run = cli("migrate-state", "--to", pg_uri, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"to {pg_uri}: items 12, takes 12" in run.stdout
    assert "the sha256 of each of the 12 takes, match the source" in run.stdout
    assert f'next: set in the [project] table of config.toml: state = "{pg_uri}"' in run.stdout
    assert "state = " not in config.read_text()  # config.toml is the user's to change
    assert takes(pg_uri) == sums

    set_state(config, pg_uri)
    assert snapshot(tmp_path) == before
    status = cli("status", cwd=tmp_path)
    assert status.returncode == 0 and pg_uri in status.stdout and "no state file" not in status.stderr
    sync = cli("sync", "--check", cwd=tmp_path)  # every take file checked against the database's sha256
    assert sync.returncode == 0, sync.stdout + sync.stderr

    run = cli("migrate-state", "--to", "data/back.sqlite", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert 'state = "data/back.sqlite"' in run.stdout and "match the source" in run.stdout
    set_state(config, "data/back.sqlite")
    assert snapshot(tmp_path) == before
    assert takes(tmp_path / "data" / "back.sqlite") == sums


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_migrate_state_refuses_a_non_empty_target_and_writes_nothing(tmp_path, pg_server):
    write_project(tmp_path / "a", entries=3, pages=1, photos=1)
    write_project(tmp_path / "b", entries=4, pages=1, photos=1)
    for name in ("a", "b"):
        assert cli("--batch", cwd=tmp_path / name).returncode == 0
    # a database that already holds a project
    database = pg_server.create_database()
    assert cli("migrate-state", "--to", pg_server.uri(database), cwd=tmp_path / "a").returncode == 0
    events = pg_server.sql(database, "SELECT COUNT(*), MAX(id) FROM events")
    run = cli("migrate-state", "--to", pg_server.uri(database), cwd=tmp_path / "b")
    assert run.returncode == 2 and run.stdout == ""
    assert "already holds a project's state" in one_error_line(run) and "nothing was written" in run.stderr
    assert pg_server.sql(database, "SELECT COUNT(*), MAX(id) FROM events") == events
    # a state file that already holds a project
    other = tmp_path / "a" / "data" / "state.sqlite"
    digest = _digest(other)
    run = cli("migrate-state", "--to", str(other), cwd=tmp_path / "b")
    assert run.returncode == 2 and "already holds a project's state" in one_error_line(run)
    assert _digest(other) == digest
    # the project's own state, a folder, another scheme, a password in the URI: refused before opening
    for target, words in (
        ("data/state.sqlite", "is the project's own state"),
        ("data", "is a folder"),
        ("mysql://u@h/db", "neither a postgresql:// URI nor a file path"),
        ("postgresql://u:secret@h/db", "a password does not belong in the URI"),
        ("postgresql://u@h:port/db", "not a valid PostgreSQL URI"),
        ("postgresql://u@h:5432/", "the URI names no database"),
    ):
        run = cli("migrate-state", "--to", target, cwd=tmp_path / "b")
        assert run.returncode == 2 and words in one_error_line(run) and "secret" not in run.stderr, target


def test_migrate_state_to_a_database_with_a_password_from_the_environment(tmp_path, pg_server):
    write_project(tmp_path, entries=3, pages=1, photos=1)
    assert cli("--batch", cwd=tmp_path).returncode == 0
    uri = pg_server.password_uri(pg_server.create_database(), "s3cret-pw")
    env = {**__import__("os").environ, "TUI_DB_PASSWORD": "wrong"}
    run = cli("migrate-state", "--to", uri, "--password-env", "TUI_DB_PASSWORD", cwd=tmp_path, env=env)
    line = one_error_line(run)
    assert run.returncode == 2 and "login refused (password authentication failed" in line
    assert f"on 127.0.0.1:{pg_server.port}" in line
    env["TUI_DB_PASSWORD"] = "s3cret-pw"
    run = cli("migrate-state", "--to", uri, "--password-env", "TUI_DB_PASSWORD", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert 'state_password_env = "TUI_DB_PASSWORD"' in run.stdout and "s3cret" not in run.stdout + run.stderr
    run = cli("migrate-state", "--to", uri, "--password-env", "TUI_NOT_SET", cwd=tmp_path)
    assert run.returncode == 2 and "the environment variable TUI_NOT_SET is not set" in one_error_line(run)


def test_status_and_commands_on_a_postgres_project_that_never_ran(tmp_path, pg_uri):
    set_state(write_project(tmp_path, entries=3, pages=1, photos=1), pg_uri)
    status = cli("status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert pg_uri in status.stdout and "no state file" not in status.stderr + status.stdout
    assert "no items yet" in status.stderr
    # maintenance has nothing to work on: refused as on a project without a state file, nothing copied
    for args in (("migrate-state", "--to", "data/copy.sqlite"), ("sync", "--check")):
        run = cli(*args, cwd=tmp_path)
        assert run.returncode == 2 and "holds no items of this project yet" in one_error_line(run), args
    assert not (tmp_path / "data" / "copy.sqlite").exists()
    # a command imports the sources of a project that never ran, as it does with a state file
    run = cli("regenerate", "dataset", "arctic_a0001", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    counts = json.loads(cli("status", "--json", cwd=tmp_path).stdout)
    assert counts["dataset"]["pending"] == 3
    run = cli("pause", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(cli("status", "--json", cwd=tmp_path).stdout) == counts  # imported once
    assert not (tmp_path / "data" / "state.sqlite").exists()


def test_an_unreachable_or_refusing_server_is_one_line_never_a_traceback(tmp_path, pg_server):
    config = write_project(tmp_path, entries=3, pages=1, photos=1)
    port = closed_port()
    set_state(config, f"postgresql://tui@127.0.0.1:{port}/tui")
    for args in (("status", "--json"), ("--batch",), ("regenerate", "dataset", "arctic_a0001")):
        run = cli(*args, cwd=tmp_path)
        line = one_error_line(run)
        assert run.returncode == 74, (args, run.stderr)
        assert line.startswith(
            f"tui-app: error: postgresql database tui on 127.0.0.1:{port}: server unreachable"
        )
        assert line.endswith("the state is consistent") and run.stdout == ""
    # a database that does not exist: a configuration error
    set_state(config, pg_server.uri("no_such_db"))
    run = cli("status", cwd=tmp_path)
    assert run.returncode == 2
    assert (
        f"postgresql database no_such_db on 127.0.0.1:{pg_server.port}: no such database"
        in one_error_line(run)
    )
    # migrate-state to an unreachable server, from a SQLite project
    set_state(config, "data/state.sqlite")
    assert cli("--batch", cwd=tmp_path).returncode == 0
    run = cli("migrate-state", "--to", f"postgresql://tui@127.0.0.1:{port}/tui", cwd=tmp_path)
    assert run.returncode == 74 and f"tui on 127.0.0.1:{port}: server unreachable" in one_error_line(run)


def test_migrate_state_without_psycopg_names_the_extra(tmp_path):
    write_project(tmp_path, entries=3, pages=1, photos=1)
    blocked = "import sys; sys.modules['psycopg'] = None; from tui_app.__main__ import run; sys.exit(run())"
    done = subprocess.run(
        [sys.executable, "-c", blocked, "migrate-state", "--to", "postgresql://u@db.lan/tui"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "a postgresql:// target needs psycopg 3: pip install 'tui_app[postgres]'" in one_error_line(done)


def test_storage_error_classifies_a_lost_connection_and_a_bug_apart(pg_server, pg_uri):
    from tui_app.storage_errors import DatabaseError, storage_error

    database = pg_uri.rsplit("/", 1)[1]
    conn = psycopg.connect(pg_uri, autocommit=True)
    pid = conn.info.backend_pid
    pg_server.sql(database, "SELECT pg_terminate_backend(?)", pid)
    with pytest.raises(psycopg.OperationalError) as lost:
        conn.execute("SELECT 1")
    for where in (pg_uri, None):  # named by the configured URI, or by nothing at all
        problem = storage_error(ExceptionGroup("run", [lost.value]), path=where)
        assert isinstance(problem, DatabaseError) and problem.exit_code == 74
        assert problem.cause == "connection lost" and "\n" not in problem.line()
    assert (
        storage_error(lost.value, path=pg_uri)
        .line()
        .startswith(f"postgresql database {database} on 127.0.0.1:{pg_server.port}: connection lost (")
    )
    with psycopg.connect(pg_uri, autocommit=True) as conn, pytest.raises(psycopg.Error) as bug:
        conn.execute("SELECT 1/0")
    assert storage_error(bug.value, path=pg_uri) is None  # a bug keeps its traceback

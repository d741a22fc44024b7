"""Opening shared SQLite files (pipelines.core.sqlite): WAL, schema, retries, typed errors."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.core.errors import PipelinesError, StateError
from pipelines.core.sqlite import database_problem, open_database

SCHEMA = "CREATE TABLE items (k TEXT PRIMARY KEY, v TEXT);"  # fails if run twice


def open_items(path: Path, **kwargs: object) -> sqlite3.Connection:
    return open_database(path, schema=SCHEMA, what="test store", **kwargs)  # type: ignore[arg-type]


def garbage(path: Path) -> bytes:
    data = b"this is not a database\n" * 200
    path.write_bytes(data)
    return data


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Paths put here are made immutable (``chattr +i``) by the test and released after."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def make_immutable(path: Path, registry: list[Path]) -> None:
    chattr = shutil.which("chattr")
    done = subprocess.run(
        [chattr or "chattr", "+i", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"chattr +i is refused here: {done.stderr.strip()}")
    registry.append(path)


def test_a_new_file_is_in_wal_mode_with_its_schema_once(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "s.sqlite3"
    conn = open_items(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("INSERT INTO items VALUES ('a', '1')")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    again = open_items(path)  # the schema is not run a second time
    assert again.execute("SELECT v FROM items").fetchall() == [("1",)]
    again.close()


def test_a_file_that_is_not_a_database_is_a_one_line_error_and_is_left_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite3"
    data = garbage(path)
    with pytest.raises(StateError) as info:
        open_items(path, forgets=" (and with it what it held)")
    message = info.value.message
    assert str(path) in message and "not a SQLite database" in message
    assert "move it away" in message and "what it held" in message
    assert "\n" not in message and info.value.exit_code == 2
    assert isinstance(info.value, PipelinesError)
    assert path.read_bytes() == data  # never replaced


def test_a_folder_where_the_file_should_be(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.mkdir()
    with pytest.raises(StateError, match="cannot open the test store") as info:
        open_items(path)
    assert str(path) in info.value.message and "PIPELINES_STATE_DIR" in info.value.message


def test_a_folder_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "sub" / "s.sqlite3"
    with pytest.raises(StateError, match="cannot create the folder") as info:
        open_items(path)
    assert str(path.parent) in info.value.message


def test_a_file_that_cannot_be_written_fails_at_open_not_later(
    tmp_path: Path, immutable: list[Path]
) -> None:
    path = tmp_path / "s.sqlite3"
    open_items(path).close()
    make_immutable(path, immutable)
    with pytest.raises(StateError, match="reading and writing") as info:
        open_items(path)
    assert str(path) in info.value.message


def _locked_by_neighbour(path: Path) -> sqlite3.Connection:
    """A neighbour holding the exclusive lock that switching to WAL needs."""
    sqlite3.connect(path).close()
    neighbour = sqlite3.connect(path, isolation_level=None)
    neighbour.execute("BEGIN EXCLUSIVE")
    return neighbour


def test_it_retries_while_a_neighbour_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    neighbour = _locked_by_neighbour(path)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            neighbour.execute("COMMIT")  # the neighbour is done

    conn = open_items(path, timeout_s=0, sleep=sleep)
    assert len(waits) == 3 and waits == sorted(waits)  # backing off
    conn.execute("INSERT INTO items VALUES ('a', '1')")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    neighbour.close()


def test_it_gives_up_with_a_clear_error_when_the_lock_never_comes(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    neighbour = _locked_by_neighbour(path)
    waits: list[float] = []
    with pytest.raises(StateError, match="stayed locked") as info:
        open_items(path, timeout_s=0, attempts=5, sleep=waits.append)
    assert len(waits) == 5 and str(path) in info.value.message
    neighbour.close()


def test_without_wal_nothing_is_mapped_and_a_wal_file_is_switched(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    open_items(path).close()  # made in WAL mode
    conn = open_items(path, wal=False)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "truncate"
    assert conn.execute("PRAGMA mmap_size").fetchone()[0] == 0
    conn.execute("INSERT INTO items VALUES ('a', '1')")
    # no WAL index: nothing that a read-only or immutable file could turn into a SIGBUS
    assert not path.with_name("s.sqlite3-shm").exists()
    assert not path.with_name("s.sqlite3-wal").exists()
    conn.close()


def test_errors_met_in_use_are_one_line_state_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    neighbour = _locked_by_neighbour(path)
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.Error) as raised:
        conn.execute("BEGIN IMMEDIATE")
    busy = database_problem(path, "test store", raised.value, opening=False)
    assert "stayed locked" in busy.message and str(path) in busy.message
    neighbour.close()
    conn.close()
    denied = sqlite3.OperationalError("attempt to write a readonly database")
    denied.sqlite_errorcode = sqlite3.SQLITE_READONLY
    problem = database_problem(path, "test store", denied, opening=False)
    assert isinstance(problem, StateError) and problem.exit_code == 2
    assert "cannot write the test store" in problem.message and "read-only" in problem.message
    assert "\n" not in problem.message

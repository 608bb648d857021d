"""SqliteFile: one SQLite file that several threads and worker processes use at once.

It owns the connections and the transactions, nothing about what the file holds. WAL mode: a
reader never waits for a writer and sees one snapshot for a whole `read()`; a `write()` is a
`BEGIN IMMEDIATE` transaction that waits up to `BUSY_TIMEOUT_MS` for another process's (``quick_ms``:
a few ms only). Each thread has its own connection, and so does each process (a forked child opens
its own and never touches its parent's). A connection whose file was replaced (a damaged file moved
aside by another process) or deleted opens the file that is there now. (A file deleted by hand
whose inode the kernel gives at once to a new file is not told apart by a connection that was
idle meanwhile: such a process keeps its old file until it restarts, when the new one is found
stale and rebuilt.) `synchronous=NORMAL`: a power cut may lose the last transactions, never the
file. The file is created 0640, whole, by a link (SQLite gives its -wal and -shm the same mode).

``prepare(conn)`` makes or checks the file's tables: once per process and file, inside a write
transaction, so processes starting together do it one at a time.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SqliteFile", "BUSY_TIMEOUT_MS", "is_busy", "is_damaged"]

BUSY_TIMEOUT_MS = 5000  # a write waits this long for another process's


def is_busy(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def is_damaged(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class SqliteFile:
    def __init__(self, path: Path, prepare: Callable[[sqlite3.Connection], None]) -> None:
        self.path = Path(path)
        self._prepare = prepare
        self._local = threading.local()
        self._prepare_lock = threading.Lock()
        self._prepared: tuple[int, tuple[int, int] | None] | None = None  # (pid, file) prepared
        self._inherited: list[sqlite3.Connection] = []  # a forked parent's: never used or closed here

    def conn(self) -> sqlite3.Connection:
        """This thread's connection to the file that is at the path now."""
        held = getattr(self._local, "held", None)
        pid, here = os.getpid(), _identity(self.path)
        if held is not None and held[0] == pid and held[2] == here and here is not None:
            return held[1]
        if held is not None and held[0] == pid:
            _close(held[1])
            with self._prepare_lock:
                self._prepared = None  # a new file (its inode may be the old one's, reused): prepare it
        elif held is not None:
            self._inherited.append(held[1])  # closing it in the child could disturb the parent's file locks
        conn = self._connect()
        self._local.held = (pid, conn, _identity(self.path))
        return conn

    def _connect(self) -> sqlite3.Connection:
        self._create()
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            with self._prepare_lock:
                key = (os.getpid(), _identity(self.path))
                if self._prepared != key:
                    with self._transaction(conn, "BEGIN IMMEDIATE"):
                        self._prepare(conn)
                    self._prepared = key
        except BaseException:
            _close(conn)
            raise
        return conn

    def _create(self) -> None:
        """An empty file (a valid empty database) at mode 0640, made whole by a link: the descriptor
        that made it is closed before any connection can lock the file (closing a descriptor drops
        every POSIX lock its process holds on the file, SQLite's included)."""
        if self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.new")
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640))
        try:
            os.link(tmp, self.path)
        except FileExistsError:  # another thread or process made it first
            pass
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection, begin: str) -> Iterator[sqlite3.Connection]:
        conn.execute(begin)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def write(self, quick_ms: int | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction (``quick_ms``: wait at most that long for another writer)."""
        conn = self.conn()
        if quick_ms is not None:
            conn.execute(f"PRAGMA busy_timeout = {int(quick_ms)}")
        try:
            with self._transaction(conn, "BEGIN IMMEDIATE"):
                yield conn
        finally:
            if quick_ms is not None:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One snapshot for every statement inside."""
        with self._transaction(self.conn(), "BEGIN") as conn:
            yield conn

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads)."""
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == os.getpid():
            _close(held[1])
        self._local.held = None

    def move_aside(self, suffix: str) -> Path:
        """Rename the file (a damaged one, kept for a look) and drop its -wal and -shm; every
        connection then opens a new file."""
        self.close()
        aside = self.path.with_name(self.path.name + suffix)
        os.replace(self.path, aside)
        for extra in ("-wal", "-shm"):
            self.path.with_name(self.path.name + extra).unlink(missing_ok=True)
        return aside


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _close(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:  # a damaged file may refuse even that; the connection goes anyway
        pass

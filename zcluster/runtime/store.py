"""The durable store behind the persistence port (core/persistence.py): SQLite.

One database per node in its ``state_dir`` (``state.sqlite3``), in WAL mode, written
one transaction per batch of records. ``sync`` is the fsync policy (docs/delivery.md,
"Durability"):

- ``normal`` (default): a batch is durable once written to the WAL; it survives the
  process being killed, not a power loss or an OS crash (the last batches may go);
- ``full``: every batch is fsynced before the node goes on: it survives a power loss,
  at the cost of one fsync per loop turn that writes;
- ``off``: no fsync at all; the OS writes when it likes (tests, throwaway nodes).

A ``lock`` file held with ``flock`` keeps a second process out of the same directory.
The database names its format, version and node: a corrupt, foreign (another node's,
or not zcluster's) or newer file stops the node at start with a StateError saying
which, never mid-run. Times are kept as wall-clock seconds, so that deadlines and the
exactly-once window's ages carry across restarts; the core's own clock is monotonic.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from zcluster.core.persistence import (
    DeliveryNoted,
    Record,
    RestoredState,
    SendKept,
    SendSettled,
    TxnApplied,
    TxnDecided,
    TxnForgotten,
    TxnPrepared,
)
from zcluster.errors import ConfigError
from zcluster.protocol.guarantees import DeliveryGuarantee

FORMAT = "zcluster-state"
#: the layout this release writes; it reads no later one
VERSION = 1
DATABASE = "state.sqlite3"
LOCK = "lock"
SYNC_POLICIES = {"normal": "NORMAL", "full": "FULL", "off": "OFF"}

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sends (
    target TEXT NOT NULL, number TEXT NOT NULL, name TEXT NOT NULL, payload BLOB NOT NULL,
    guarantee TEXT NOT NULL, deadline REAL NOT NULL, origin TEXT NOT NULL,
    PRIMARY KEY (target, number));
CREATE TABLE deliveries (
    sender TEXT NOT NULL, incarnation TEXT NOT NULL, number TEXT NOT NULL,
    finished INTEGER NOT NULL, error TEXT, at REAL NOT NULL,
    PRIMARY KEY (sender, incarnation, number));
CREATE INDEX deliveries_at ON deliveries (at);
CREATE TABLE decisions (
    incarnation TEXT NOT NULL, number TEXT NOT NULL, committed INTEGER NOT NULL,
    targets TEXT NOT NULL, PRIMARY KEY (incarnation, number));
CREATE TABLE prepared (
    coordinator TEXT NOT NULL, incarnation TEXT NOT NULL, number TEXT NOT NULL,
    name TEXT NOT NULL, payload BLOB NOT NULL, participants TEXT NOT NULL,
    deadline REAL NOT NULL, PRIMARY KEY (coordinator, incarnation, number));
CREATE TABLE applied (
    coordinator TEXT NOT NULL, incarnation TEXT NOT NULL, number TEXT NOT NULL,
    committed INTEGER NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (coordinator, incarnation, number));
CREATE INDEX applied_at ON applied (at);
"""


class StateError(ConfigError):
    """The state directory cannot be used: in use, corrupt, foreign or newer."""


class StateStore:
    """One node's durable state. ``open`` it, ``load`` what earlier lives left, then
    ``write`` each batch; ``close`` releases the directory."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        lock_fd: int,
        path: Path,
        clock: Callable[[], float],
        window_max_count: int,
        window_s: float,
        memory_s: float,
    ) -> None:
        self._db = connection
        self._memory_s = memory_s
        self._lock_fd = lock_fd
        self.path = path
        self._clock = clock
        self._window_max_count = window_max_count
        self._window_s = window_s
        #: the incarnation of the life before this one (0: none)
        self.previous_incarnation = 0
        self._writes = 0

    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str],
        node_id: str,
        *,
        sync: str = "normal",
        clock: Callable[[], float] = time.monotonic,
        window_max_count: int = 100_000,
        window_s: float = 600.0,
        memory_s: float = 300.0,
    ) -> StateStore:
        """Lock ``state_dir`` (made if missing) and open the node's database in it;
        StateError, saying why, if it cannot be used."""
        if sync not in SYNC_POLICIES:
            raise StateError(f"state sync must be one of {', '.join(SYNC_POLICIES)}, not {sync!r}")
        path = Path(state_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"state_dir {path}: cannot be made ({exc.strerror})") from None
        if not path.is_dir():
            raise StateError(f"state_dir {path} is not a directory")
        lock_fd = _lock(path)
        try:
            connection = _connect(path / DATABASE, sync)
            store = cls(connection, lock_fd, path, clock, window_max_count, window_s, memory_s)
            store.previous_incarnation = store._check(node_id)
        except BaseException:
            os.close(lock_fd)
            raise
        return store

    def _check(self, node_id: str) -> int:
        """Make the schema of a new database, or check an existing one is ours."""
        db, where = self._db, self.path / DATABASE
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if not tables:
                with db:
                    db.executescript(_SCHEMA)
                    db.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [("format", FORMAT), ("version", str(VERSION)), ("node_id", node_id)],
                    )
                return 0
            if "meta" not in tables:
                raise StateError(f"{where} is not a zcluster state file (another program's?)")
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != FORMAT:
                raise StateError(f"{where} is not a zcluster state file (another program's?)")
            version = int(meta.get("version", "0"))
            if version > VERSION:
                raise StateError(
                    f"{where} was written by a newer zcluster (state version {version}; this "
                    f"release reads {VERSION}): upgrade, or give another state_dir"
                )
            if meta.get("node_id") != node_id:
                raise StateError(
                    f"{where} belongs to node {meta.get('node_id')!r}, not {node_id!r}: "
                    "give each node its own state_dir"
                )
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise StateError(f"{where} is corrupt ({check[0] if check else 'no answer'})")
            return int(meta.get("incarnation", "0"))
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{where} is corrupt or not a database ({exc})") from None

    def begin(self, incarnation: int) -> None:
        """This life's incarnation is ``incarnation``: noted, so that the next one is later."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('incarnation', ?)", (str(incarnation),)
            )

    def load(self) -> RestoredState:
        """What earlier lives left, on the core's clock now; StateError if it cannot be
        read (a layout this release does not know)."""
        try:
            return self._load()
        except (sqlite3.Error, ValueError) as exc:
            raise StateError(
                f"{self.path / DATABASE} cannot be read ({exc}): not the layout of state "
                f"version {VERSION}; give another state_dir"
            ) from None

    def _load(self) -> RestoredState:
        offset = self._clock() - time.time()  # wall time -> the core's clock
        db = self._db
        sends = tuple(
            SendKept(
                target,
                int(number),
                name,
                bytes(payload),
                DeliveryGuarantee(g),
                at + offset,
                int(origin),
            )
            for target, number, name, payload, g, at, origin in db.execute(
                "SELECT target, number, name, payload, guarantee, deadline, origin FROM sends "
                "ORDER BY rowid"
            )
        )
        deliveries = tuple(
            DeliveryNoted(sender, int(inc), int(number), bool(finished), error, at + offset)
            for sender, inc, number, finished, error, at in db.execute(
                "SELECT sender, incarnation, number, finished, error, at FROM deliveries "
                "ORDER BY at"
            )
        )
        decisions = tuple(
            TxnDecided(int(incarnation), int(number), bool(committed), tuple(json.loads(targets)))
            for incarnation, number, committed, targets in db.execute(
                "SELECT incarnation, number, committed, targets FROM decisions ORDER BY rowid"
            )
        )
        prepared = tuple(
            TxnPrepared(
                coordinator,
                int(incarnation),
                int(number),
                name,
                bytes(payload),
                tuple(json.loads(participants)),
                deadline + offset,
            )
            for coordinator, incarnation, number, name, payload, participants, deadline in (
                db.execute(
                    "SELECT coordinator, incarnation, number, name, payload, participants, "
                    "deadline FROM prepared ORDER BY rowid"
                )
            )
        )
        applied = tuple(
            TxnApplied(coordinator, int(incarnation), int(number), bool(committed), at + offset)
            for coordinator, incarnation, number, committed, at in db.execute(
                "SELECT coordinator, incarnation, number, committed, at FROM applied ORDER BY at"
            )
        )
        return RestoredState(
            sends=sends,
            deliveries=deliveries,
            decisions=decisions,
            incarnation=self.previous_incarnation,
            prepared=prepared,
            applied=applied,
        )

    def write(self, records: Iterable[Record]) -> None:
        """Write one batch, in one transaction."""
        offset = time.time() - self._clock()  # the core's clock -> wall time
        db = self._db
        with db:
            for record in records:
                match record:
                    case SendKept():
                        db.execute(
                            "INSERT OR REPLACE INTO sends VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (
                                record.target,
                                str(record.number),
                                record.name,
                                record.payload,
                                record.guarantee.value,
                                record.deadline + offset,
                                str(record.origin),
                            ),
                        )
                    case SendSettled():
                        db.execute(
                            "DELETE FROM sends WHERE target = ? AND number = ?",
                            (record.target, str(record.number)),
                        )
                    case DeliveryNoted():
                        db.execute(
                            "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?)",
                            (
                                record.sender,
                                str(record.incarnation),
                                str(record.number),
                                int(record.finished),
                                record.error,
                                record.at + offset,
                            ),
                        )
                    case TxnDecided():
                        db.execute(
                            "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?)",
                            (
                                str(record.incarnation),
                                str(record.number),
                                int(record.committed),
                                json.dumps(list(record.targets)),
                            ),
                        )
                    case TxnForgotten():
                        db.execute(
                            "DELETE FROM decisions WHERE incarnation = ? AND number = ?",
                            (str(record.incarnation), str(record.number)),
                        )
                    case TxnPrepared():
                        db.execute(
                            "INSERT OR REPLACE INTO prepared VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (
                                record.coordinator,
                                str(record.incarnation),
                                str(record.number),
                                record.name,
                                record.payload,
                                json.dumps(list(record.participants)),
                                record.deadline + offset,
                            ),
                        )
                    case TxnApplied():
                        key = (record.coordinator, str(record.incarnation), str(record.number))
                        db.execute(
                            "DELETE FROM prepared WHERE coordinator = ? AND incarnation = ? "
                            "AND number = ?",
                            key,
                        )
                        db.execute(
                            "INSERT OR REPLACE INTO applied VALUES (?, ?, ?, ?, ?)",
                            (*key, int(record.committed), record.at + offset),
                        )
            self._writes += 1
            if self._writes % _PRUNE_EVERY_COUNT == 0:
                self._prune()

    def _prune(self) -> None:
        """The exactly-once window and applied decisions, as the core keeps them: by age
        (and the window by count)."""
        db = self._db
        db.execute("DELETE FROM deliveries WHERE at < ?", (time.time() - self._window_s,))
        db.execute("DELETE FROM applied WHERE at < ?", (time.time() - self._memory_s,))
        db.execute(
            "DELETE FROM deliveries WHERE rowid IN (SELECT rowid FROM deliveries "
            "ORDER BY at DESC LIMIT -1 OFFSET ?)",
            (self._window_max_count,),
        )

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


#: the window is pruned once every this many batches
_PRUNE_EVERY_COUNT = 1000


def _lock(path: Path) -> int:
    """Hold ``path/lock`` for this process (released when it exits, however)."""
    lock_path = path / LOCK
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(f"state_dir {path}: cannot open {LOCK} ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateError(
            f"state_dir {path} is in use by another process (pid {holder}); each node needs its own"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _connect(database: Path, sync: str) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={SYNC_POLICIES[sync]}")
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{database} is corrupt or not a database ({exc})") from None
    # isolation_level=None: "with connection" would not begin a transaction; say when
    connection.isolation_level = "DEFERRED"
    return connection
